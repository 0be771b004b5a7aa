"""The one commit protocol for the files of an artifact (engine, manifest, accuracy report).

Whatever interrupts a commit (Ctrl-C, SIGTERM, an exception, SIGKILL, a power cut), the folder
ends up holding either the whole previous set of files or the whole new one, never a mix.
Build, ``ci``'s cache restore, ``pull`` and the ``dir://`` and ``triton://`` registries all write
through :class:`ArtifactWriter`.

Protocol, once every new file is staged complete and fsynced beside its final name
(``.{name}.{pid}-{token}.tmp``):

1. back up: each final file that exists is hard-linked to ``.{name}.{pid}-{token}.bak.tmp``
   (the final stays in place, so readers see the old set);
2. journal: ``.trtforge-commit.{pid}-{token}.journal.tmp`` (written atomically) lists, per final
   name, its staged file and its backup (none when the final did not exist);
3. rename every staged file onto its final name (or remove a final the new set drops);
4. commit point: the journal is removed (one unlink);
5. the backups are removed.

Before step 4 the change is undone by :func:`rollback`, which puts every backup back over its
final, removes a final that had none, then removes the journal; it is idempotent, so a rollback
cut short is finished by the next one. After step 4 the new set is in place.

Interrupts: SIGINT and SIGTERM are deferred from step 1 to step 5 (recorded, then raised once the
folder is consistent); one that arrives before the commit point rolls back, so an interrupted run
replaces nothing. Any exception inside the window rolls back too. SIGKILL cannot be deferred:
the next run that writes to the folder calls :func:`sweep`, which rolls back the journal of a
dead process and then removes the other temporaries of dead processes: owner pid gone, or taken
by a process that started after the temporary was made (pid reuse, e.g. containers), or older
than :data:`STALE_AFTER_S`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from trtforge.fsutil import TEMP_SUFFIX, TempName, fsync_dir, fsync_file, make_temp

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


def _write_journal(folder: Path, entries: list[_Entry]) -> Path:
    staged = make_temp(folder, JOURNAL_BASE)
    staged.write_text(json.dumps([entry.to_dict() for entry in entries]))
    fsync_file(staged)
    journal = staged.with_name(staged.name.removesuffix(TEMP_SUFFIX) + "." + JOURNAL_KIND)
    os.replace(staged, journal)
    fsync_dir(folder)
    return journal


def _backup(final: Path) -> str:
    """A second name for ``final``'s bytes: a hard link (instant), or a copy where links fail."""
    backup = make_temp(final.parent, final.name, "." + BACKUP_KIND)
    try:
        backup.unlink()
        os.link(final, backup)
    except OSError:
        shutil.copy2(final, backup)
        fsync_file(backup)
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


def rollback(folder: Path, entries: list[_Entry]) -> Swept:
    """Put the previous set back (idempotent); the caller removes the journal afterwards.
    Returns the temporaries it consumed: backups put back, staged files not renamed in yet."""
    removed = Swept()
    for entry in entries:
        final = folder / entry.final
        if entry.backup is not None:
            removed += _restore(folder / entry.backup, final)
        else:
            final.unlink(missing_ok=True)
        if entry.staged is not None:
            size = _remove(folder / entry.staged)
            removed += Swept(1, size) if size is not None else Swept()
    fsync_dir(folder)
    return removed


def _commit(folder: Path, changes: dict[str, Path | None]) -> None:
    """Steps 1 to 5 of the protocol (module docstring) for ``changes``: final name -> staged file."""
    entries: list[_Entry] = []
    journal: Path | None = None
    with _Deferral() as deferral:
        try:
            for name, staged in changes.items():
                final = folder / name
                backup = _backup(final) if final.is_file() else None
                entries.append(_Entry(name, staged.name if staged else None, backup))
                on_step(f"backup {name}")
            journal = _write_journal(folder, entries)
            on_step("journal")
            for entry in entries:
                if entry.staged is not None:
                    os.replace(folder / entry.staged, folder / entry.final)
                else:
                    (folder / entry.final).unlink(missing_ok=True)
                on_step(f"rename {entry.final}")
            fsync_dir(folder)
            if deferral.pending:
                raise _Interrupted  # before the commit point: replace nothing
            journal.unlink()
        except BaseException:
            rollback(folder, entries)  # if this fails, the journal stays for the next run's sweep
            if journal is not None:
                journal.unlink(missing_ok=True)
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


class ArtifactWriter:
    """Stage the files of one artifact in ``folder``, then :meth:`commit` them together.

    Leaving the ``with`` block without a commit (an error, Ctrl-C) removes what was staged and
    leaves every final file as it was.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._changes: dict[str, Path | None] = {}

    def stage(self, name: str) -> Path:
        """An empty temporary file that becomes ``folder/name`` on commit; write it completely."""
        staged = make_temp(self.folder, name)
        self._discard(name)
        self._changes[name] = staged
        return staged

    def remove(self, name: str) -> None:
        """``folder/name`` is not part of the new set: the commit removes it (rollback restores it)."""
        self._discard(name)
        self._changes[name] = None

    def _discard(self, name: str) -> None:
        earlier = self._changes.pop(name, None)
        if earlier is not None:
            earlier.unlink(missing_ok=True)

    def commit(self) -> None:
        for staged in self._changes.values():
            if staged is not None:
                fsync_file(staged)
        _commit(self.folder, self._changes)
        self._changes = {}

    def __enter__(self) -> ArtifactWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for staged in self._changes.values():
            if staged is not None:
                staged.unlink(missing_ok=True)
        self._changes = {}


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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _started_at(pid: int) -> float | None:
    """When process ``pid`` started (Linux ``/proc``); None where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        return int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _stale(path: Path, parsed: TempName, now: float) -> bool:
    """A dead owner's temporary, or one older than the process now holding its pid (pid reuse:
    its ctime, set when it was created or linked, predates that process), or an old one."""
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
    if path.is_dir() and not path.is_symlink():
        return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.lstat().st_size


def _remove(path: Path) -> int | None:
    """Remove a temporary (file or folder); its size in bytes, None if another sweep was first."""
    try:
        size = _footprint(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return None
    return size


def _recover(journal: Path) -> Swept:
    """Roll back the interrupted commit a dead process's journal describes."""
    try:
        entries = [_Entry(**item) for item in json.loads(journal.read_text())]
    except (OSError, ValueError, TypeError):
        entries = []  # a journal is renamed into place complete; unreadable means not ours
    removed = rollback(journal.parent, entries)
    size = _remove(journal)
    return removed + (Swept(1, size, 1) if size is not None else Swept())


def sweep(folder: Path, depth: int = 1) -> Swept:
    """Clean up after dead runs in ``folder`` (and ``depth - 1`` levels of subfolders): roll back
    their interrupted commits, then remove their temporaries. A live writer's files are kept."""
    if depth < 1 or not folder.is_dir():
        return Swept()
    now = time.time()
    try:
        children = sorted(folder.iterdir(), key=lambda p: not p.name.endswith(JOURNAL_KIND))
    except OSError:
        return Swept()
    swept = Swept()
    for child in children:
        parsed = TempName.parse(child.name)
        if parsed is None:
            if child.is_dir() and not child.is_symlink():
                swept += sweep(child, depth - 1)
            continue
        if not _stale(child, parsed, now):
            continue
        if parsed.kind == JOURNAL_KIND:
            swept += _recover(child)
            continue
        size = _remove(child)
        if size is not None:
            swept += Swept(1, size)
    return swept
