"""Atomic writes and the names of temporaries: a failed run never leaves a partial artifact, and a
killed one leaves only temporaries the next run recognises.

Every temporary trtforge creates beside a final file is named ``.{base}.{pid}-{token}.{kind}``
(``kind`` ends in ``.tmp``), and its owner holds an exclusive ``flock`` on it for as long as it
owns it: the next run tells a live writer's file from a dead one's (:func:`trtforge.artifact.sweep`)
by that lock first, which holds across pid namespaces (a container sharing the folder, whose pids
mean nothing here) and dies with its holder, and by the pid in the name only where the lock says
nothing (a file system without ``flock``, or a writer that took none).
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

try:
    import fcntl
except ImportError:  # not POSIX: no flock, a temporary's liveness is judged by its pid alone
    fcntl = None  # type: ignore[assignment]

from trtforge.errors import InvalidInputError

T = TypeVar("T")

TEMP_SUFFIX = ".tmp"
#: ``.{base}.{pid}-{token}.tmp``, ``.{base}.{pid}-{token}.bak.tmp`` (a commit's backup),
#: ``.{base}.{pid}-{token}.journal.tmp`` (a commit's journal)
TEMP_PATTERN = re.compile(
    r"^\.(?P<base>.+)\.(?P<pid>[1-9]\d*)-(?P<token>[a-z0-9_]+)\.(?P<kind>bak\.tmp|journal\.tmp|tmp)$"
)
#: temporaries of trtforge versions that did not record the pid (``mkstemp``'s 8-character token)
LEGACY_TEMP_PATTERN = re.compile(r"^\.(?:.+\.[a-z0-9_]{8}\.tmp|tmp-[a-z0-9_]{8}|remote-[a-z0-9_]{8})$")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Artifacts get the permissions a plain ``open(..., "w")`` would give them (mkstemp makes 0600).
_FILE_MODE = 0o666 & ~_current_umask()


@dataclass(frozen=True)
class TempName:
    """What a temporary's name says: the final file it stands for, its owner, its kind."""

    base: str
    pid: int | None  # None: a legacy name without the owner's pid
    kind: str

    @classmethod
    def parse(cls, name: str) -> TempName | None:
        if not name.startswith("."):  # every temporary's name is hidden: the common case, decided early
            return None
        found = TEMP_PATTERN.match(name)
        if found:
            return cls(found["base"], int(found["pid"]), found["kind"])
        if LEGACY_TEMP_PATTERN.match(name):
            return cls(name, None, "tmp")
        return None


def temp_prefix(base: str) -> str:
    """``mkstemp``/``mkdtemp`` prefix of a temporary standing for ``base``, owned by this process."""
    return f".{base}.{os.getpid()}-"


# ---------------------------------------------------------------- owning temporaries


@dataclass(frozen=True)
class _Owned:
    """A temporary this process owns: a descriptor holding an exclusive flock on it (on its inode,
    so the lock follows a rename), and the thread that made it, which removes or renames it."""

    fd: int
    thread: threading.Thread


#: the temporaries this process owns, by the path it made them under; release_temp closes each lock
_owned: dict[str, _Owned] = {}


def _forget_owned() -> None:
    """In a forked child: the parent's temporaries are not the child's (closing the inherited
    descriptors leaves the parent's locks in place: they belong to its open file descriptions)."""
    for owned in _owned.values():
        with contextlib.suppress(OSError):
            os.close(owned.fd)
    _owned.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_owned)


#: how often a wait for a lock with a deadline asks for it again (a flock that blocks has none)
_LOCK_POLL_S = 0.05


def wait_for_lock(fd: int, timeout: float | None = None) -> bool:
    """An exclusive flock on ``fd``, waited for (at most ``timeout`` seconds, then TimeoutError).
    False where there is none to take: no flock on this platform (Windows) or this file system
    (some network and FUSE ones)."""
    if fcntl is None:
        return False
    if timeout is None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            return False
        return True
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another holds it
            if time.monotonic() >= deadline:
                raise TimeoutError(f"another holder kept the lock for {timeout:g} s") from None
            time.sleep(_LOCK_POLL_S)
        except OSError:
            return False
        else:
            return True


# ---------------------------------------------------------------- lock files users share


def shared_mode(mode: int) -> int:
    """The permission bits a lock folder made in a folder of ``mode`` takes: that folder's own
    where users other than its owner may write it (a sticky /tmp, a team's setgid folder), so every
    user who may write there may lock there, and the sticky bit, so that none of them can remove a
    lock file another holds (two writers would then each hold "the" lock); 0 where it is not
    shared, and the umask decides, as for any folder (and on Windows, which has no such modes).
    Nonzero: a lock file made in a folder of ``mode`` is readable by all (:func:`open_lock`)."""
    if fcntl is None or not mode & (stat.S_IWGRP | stat.S_IWOTH):
        return 0
    return stat.S_IMODE(mode) & ~stat.S_ISUID | stat.S_ISVTX


def user_name(uid: int) -> str:
    """The name of user ``uid`` for a message (``uid N`` where it has none)."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


#: the lock files this process holds open (:func:`open_lock`'s descriptors, until :func:`close_lock`)
_lock_fds: set[int] = set()


def _forget_locks() -> None:
    """In a forked child: a lock the parent holds is not the child's. Its inherited descriptors are
    closed (not unlocked: the lock belongs to the parent's open file, which stays open), or the
    child's copy would hold the lock on after the parent let it go."""
    for fd in _lock_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _lock_fds.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks)


def open_lock(path: Path) -> int:
    """A descriptor of the lock file ``path`` to ``flock`` (POSIX), which :func:`close_lock`
    closes: until then a forked child closes its copy. See :func:`_open_lock_file`."""
    fd = _open_lock_file(path)
    _lock_fds.add(fd)
    return fd


def close_lock(fd: int) -> None:
    """Close :func:`open_lock`'s descriptor ``fd``, which releases its flock."""
    _lock_fds.discard(fd)
    os.close(fd)


def _open_lock_file(path: Path) -> int:
    """A descriptor of the lock file ``path`` (:func:`open_lock`), made where there is none
    (readable by every user who may lock it, in a folder users share: :func:`shared_mode`).
    Another user's, which this one may not write, is opened read-only: flock needs no more.
    Never with O_CREAT on an existing file (a sticky folder refuses that on another user's,
    ``fs.protected_regular``), nor through a link, nor blocking on a FIFO another user put there.
    Another user's that this one may not even read is exit 2 naming whose it is and the fix."""
    flags = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    while True:
        try:
            return os.open(path, os.O_RDWR | flags)
        except FileNotFoundError:
            pass
        except PermissionError:
            return _open_read_only(path, flags)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | flags, 0o644)
        except FileExistsError:
            continue  # another run made it meanwhile: open theirs
        try:
            if shared_mode(path.parent.stat().st_mode):
                os.fchmod(fd, 0o644)  # whatever this user's umask
        except BaseException:
            os.close(fd)
            raise
        return fd


def _open_read_only(path: Path, flags: int) -> int:
    """``path`` opened read-only (:func:`open_lock`); refused on another user's file made
    unreadable to others (a umask of 077), which trtforge never widens: whose it is and the fix."""
    try:
        return os.open(path, os.O_RDONLY | flags)
    except PermissionError as exc:
        try:
            owner = path.lstat().st_uid
        except OSError:
            raise exc from None
        if owner == os.geteuid():
            raise
        name = user_name(owner)
        raise InvalidInputError(
            f"cannot lock {path} ({exc.strerror}): {path} is {name}'s and other users may not read it; "
            f"ask {name} to run chmod a+r {path}, else write to another folder"
        ) from exc


def _own(path: Path, fd: int) -> bool:
    """Lock the new temporary ``path`` (open as ``fd``) for this process. False when a sweep
    removed it before the lock was taken (it found the name unlocked): the caller makes another.
    Where there is no flock, it is owned by its name's pid alone."""
    if not wait_for_lock(fd):  # waits only while a sweep holds it to judge it
        os.close(fd)
        return True
    try:
        still = os.stat(path, follow_symlinks=False)
        mine = os.fstat(fd)
        if (still.st_dev, still.st_ino) == (mine.st_dev, mine.st_ino):
            _owned[str(path)] = _Owned(fd, threading.current_thread())
            return True
    except FileNotFoundError:
        pass
    os.close(fd)
    return False


def make_temp(folder: Path, base: str, suffix: str = TEMP_SUFFIX, mode: int | None = None) -> Path:
    """A new empty temporary file in ``folder`` (``mode``, else as ``open(..., "w")`` gives), named
    for ``base`` and locked by this process until :func:`release_temp`. Write it through its path
    (``write_bytes``, ``shutil.copyfile``: same inode, the lock stays), never replace it. mkstemp
    makes it 0600: a narrower ``mode`` is set before anyone else could open it, never after."""
    while True:
        fd, name = tempfile.mkstemp(prefix=temp_prefix(base), suffix=suffix, dir=folder)
        os.chmod(name, _FILE_MODE if mode is None else mode)
        if _own(Path(name), fd):
            return Path(name)


def make_temp_dir(folder: Path, base: str) -> Path:
    """A new temporary folder in ``folder`` named for ``base`` (0700, as ``mkdtemp`` makes it),
    locked by this process until :func:`release_temp`."""
    while True:
        name = tempfile.mkdtemp(prefix=temp_prefix(base), suffix=TEMP_SUFFIX, dir=folder)
        try:
            fd = os.open(name, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:  # a sweep took it already
            continue
        if _own(Path(name), fd):
            return Path(name)


@contextlib.contextmanager
def temp_dir(folder: Path, base: str) -> Iterator[Path]:
    """:func:`make_temp_dir` for the length of a ``with`` block, removed (whatever it holds) after."""
    import shutil

    path = make_temp_dir(folder, base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        release_temp(path)


def release_temp(path: Path) -> None:
    """This process no longer owns ``path`` (removed, or renamed to its final name): drop its lock."""
    owned = _owned.pop(str(path), None)
    if owned is not None:
        os.close(owned.fd)


def discard_stranded_temps() -> None:
    """A command has failed (Ctrl-C included) and every step of it in this thread has ended: the
    plain temporaries this thread, or one that has ended, still owns are garbage, and go now rather
    than at the next run's sweep. A Ctrl-C can strand one where no ``finally`` sees it: between
    ``mkstemp`` and the ``try`` that owns the file, or in a ``with`` whose ``__enter__`` had made it
    and not yet returned (a cache entry's, 2 interrupted int8 builds in 400). A thread still at work
    keeps its own: the FP16-storage emulation, which a build refused on a GPU host never waits for,
    finishes its cache entry before the interpreter exits. A commit's journal and backups stay: a
    rollback that failed left them for the next run's recovery."""
    import shutil

    me = threading.current_thread()
    for name, owned in list(_owned.items()):
        if owned.thread is not me and owned.thread.is_alive():
            continue
        path = Path(name)
        parsed = TempName.parse(path.name)
        if parsed is None or parsed.kind != TEMP_SUFFIX.removeprefix("."):
            continue
        with contextlib.suppress(OSError):
            if is_folder(path):
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        release_temp(path)


def discard_temp(path: Path) -> None:
    """Remove a temporary file of this process and drop its lock (dropped even where the file
    cannot go: a sweep may then take it)."""
    try:
        path.unlink(missing_ok=True)
    finally:
        release_temp(path)


def rename_temp(source: Path, target: Path) -> None:
    """Rename a temporary of this process to another temporary name; the lock goes with it."""
    os.replace(source, target)
    owned = _owned.pop(str(source), None)
    if owned is not None:
        _owned[str(target)] = owned


def link_temp(source: Path, link: Path) -> None:
    """Give ``source``'s bytes the temporary name ``link`` (a hard link), locked from the moment the
    name exists: the lock is taken on ``source``'s inode first. OSError where it cannot be (no
    hard links here, or another process holds that inode's lock): the caller copies instead."""
    if fcntl is None:
        os.link(source, link)
        return
    fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.link(source, link)
    except BaseException:
        os.close(fd)
        raise
    _owned[str(link)] = _Owned(fd, threading.current_thread())


class Owner(enum.Enum):
    """What a temporary's lock says about its owner."""

    ALIVE = "alive"  # a process holds the lock: it owns the file, whatever the pid in its name
    GONE = "gone"  # nobody holds it: the owner died, or never took one (its pid decides)
    UNKNOWN = "unknown"  # no flock here (or the file cannot be opened): its pid decides


@contextlib.contextmanager
def judging_owner(path: Path) -> Iterator[Owner]:
    """Try ``path``'s lock; while the block runs a GONE temporary stays locked by the caller, so
    its (pid-less) owner cannot come back for it before it is removed."""
    if fcntl is None:
        yield Owner.UNKNOWN
        return
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)  # a FIFO must not block us
    try:
        fd = os.open(path, flags)
    except OSError:
        yield Owner.UNKNOWN
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        owner = Owner.GONE
    except BlockingIOError:
        owner = Owner.ALIVE
    except OSError:
        owner = Owner.UNKNOWN
    try:
        yield owner
    finally:
        os.close(fd)


def drop_cached_pages(path: Path) -> None:
    """Give the page cache of the regular file ``path`` back to the kernel, leaving the file as it
    is: a file about to be replaced by a new one of about its size, so that the new file's pages
    reuse these. On a VM that reports free memory to its host (virtio-balloon free page reporting),
    writing a new 47 MB engine into pages the host took back took 130-170 ms against 15-25 ms into
    pages just freed (measured here). The kernel drops clean, unmapped pages only (it starts
    writing dirty ones back). The cost: should the replacement not happen (a rejected build), the
    old file is read from disk again by its next reader. Anything but a regular file (a link, a
    FIFO, a device) is left alone, and opened without blocking or following."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:  # not on macOS or Windows
        return
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError:  # not there (a first build), a link, unreadable: nothing to give back
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_without_blocking(path: str, flags: int) -> int:
    """An ``open`` opener for a file nobody vouches for: a FIFO opens at once (it would wait for a
    writer), and a terminal does not become the controlling one."""
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))


def read_regular_file(path: Path, limit: int) -> bytes | None:
    """The bytes of ``path`` where it is a regular file of at most ``limit`` bytes; None where it is
    anything else (a FIFO, a device, a folder, a larger file), which a folder anyone can write may
    hold under an entry's name. OSError where it cannot be opened (none there, no permission)."""
    with open(path, "rb", opener=open_without_blocking) as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        data = handle.read(limit + 1)
    return data if len(data) <= limit else None


def copy_at_most(chunks: Iterable[bytes], out: IO[bytes], limit: int) -> bool:
    """Copy ``chunks`` into ``out`` while they stay within ``limit`` bytes; False, with nothing more
    read or written, at the chunk that would go past it: a source that does not end (a registry's
    stream, a device behind a file's name) cannot fill the disk."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            return False
        out.write(chunk)
    return True


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def resolved(path: Path) -> Path:
    """``path.resolve()`` that leaves a symlink loop in the path instead of raising: Python 3.11's
    raises RuntimeError there (exit 1, "internal error"), where the file's reader, or the writer of
    a folder, reports the loop as the user's error, as for any other path ("cannot be read (Too many
    levels of symbolic links)", exit 2). A path a user gave is resolved through it before it is read."""
    return Path(os.path.realpath(path))


def check_inside(root: Path, path: Path, what: str) -> None:
    """Refuse (exit 2) a ``path`` that resolves outside ``root``: a name read from a manifest, a
    registry or a flag never reaches a file outside the folder it belongs to."""
    base = resolved(root)
    target = resolved(path)
    if target != base and base not in target.parents:
        raise InvalidInputError(f"{what}: {path} lies outside {root}: refused")


def is_folder(path: Path) -> bool:
    """A folder itself at ``path`` (not a link to one, which a rename replaces like a file)."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except FileNotFoundError:
        return False


def refuse_folders(paths: Iterable[Path], fix: str) -> None:
    """A folder where a file is to be renamed in is the user's to move (exit 2), said before any
    file is written: the rename would fail halfway, after the files before it."""
    for path in paths:
        if is_folder(path):
            raise InvalidInputError(f"cannot write {path}: it is a folder; remove it, or {fix}")


def ensure_writable_dir(path: Path, flag: str = "--out", what: str = "output directory") -> Path:
    """Create ``path`` if needed and prove it is writable, with an error that says how to fix it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if isinstance(exc, FileExistsError | NotADirectoryError):
            check_writable_dir(path, flag, what)  # names the file in the way
        raise InvalidInputError(
            f"cannot create {what} {path}: {exc.strerror}; pass {flag} with a writable folder"
        ) from exc
    _prove_writable(path, path, flag, what)
    return path


def check_writable_dir(path: Path, flag: str = "--out", what: str = "output directory") -> None:
    """Prove that ``path`` is a folder files can be written in, or can be made where it would go,
    without making it: a command checks this before its long work, and a refused command leaves
    the disk as it was."""
    if path.is_symlink() and not path.exists():
        problem = f"is a link to {os.readlink(path)}, which does not exist"
        try:
            path.stat()
        except FileNotFoundError:
            pass
        except OSError as exc:  # a symlink loop: said as a reader says it of a file
            problem = f"cannot be read ({exc.strerror})"
        raise InvalidInputError(f"{what} {path} {problem}; pass {flag} with a writable folder")
    existing = next(folder for folder in (path, *path.absolute().parents) if folder.exists())
    if not existing.is_dir():
        problem = "is a file" if existing == path else f"cannot be made: {existing} is a file"
        raise InvalidInputError(f"{what} {path} {problem}; pass {flag} with a writable folder")
    _prove_writable(existing, path, flag, what)


def check_report_file(
    path: Path, flag: str, example: str, *, inputs: Iterable[Path] = (), reserved: Sequence[str] = ()
) -> None:
    """A report a command writes at its end (``--junit``, ``$GITHUB_STEP_SUMMARY``; through a link, to
    its target: :func:`report_target`), checked before its work: else the whole run would fail at its
    end, or its atomic write replace what is there. Refused (exit 2, ``example`` the file name the fix
    suggests): a folder, a file that is not a regular one (a device, a named pipe), one of the
    command's ``inputs``, a name ending in one of ``reserved`` (a trtforge artifact's, which the run
    may write), and a folder it cannot write in."""
    target = report_target(path)
    shown = f"{path} (a link to {target})" if target != path else str(path)
    fix = f"point it at another file, e.g. {path.parent / example}"
    for suffix in reserved:
        if path.name.endswith(suffix) or target.name.endswith(suffix):
            raise InvalidInputError(f"{flag} {shown} is named like a trtforge artifact file (*{suffix}); {fix}")
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:  # a link that loops, a folder it may not search
        raise InvalidInputError(f"{flag} {shown}: {exc.strerror}; {fix}") from exc
    if mode is not None and stat.S_ISDIR(mode):
        raise InvalidInputError(f"{flag} {shown} is a folder; point it at a file, e.g. {path / example}")
    if mode is not None and not stat.S_ISREG(mode):
        raise InvalidInputError(
            f"{flag} {shown} is {special_file_kind(mode)}, not a regular file: the report would replace it; {fix}"
        )
    check_report_not_input(path, flag, example, inputs)
    check_writable_dir(target.parent, flag, f"folder of {flag}")


def report_target(path: Path) -> Path:
    """The file a report written to ``path`` replaces: a link's target, as a shell's ``>`` writes
    through a link (an atomic write would replace the link itself), else ``path``."""
    return resolved(path) if path.is_symlink() else path


def check_report_not_input(path: Path, flag: str, example: str, inputs: Iterable[Path]) -> None:
    """Refuse (exit 2) a report file that is one of ``inputs``, whatever the spelling of either (a
    link, a hard link): writing the report would replace a spec, the project file, a model or a
    key. Inputs are looked at only where the report file exists."""
    try:
        report = path.stat()
    except OSError:
        return
    for each in inputs:
        try:
            found = each.stat()
        except OSError:
            continue
        if (found.st_dev, found.st_ino) == (report.st_dev, report.st_ino):
            raise InvalidInputError(
                f"{flag} {path} is an input of this command ({each}): the report would replace it; "
                f"point it at another file, e.g. {path.parent / example}"
            )


_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_file_kind(mode: int) -> str:
    """What a file that is neither a regular file nor a folder is (``st_mode``), for the line that refuses it."""
    return next((name for test, name in _FILE_KINDS if test(mode)), "a special file")


def _prove_writable(folder: Path, path: Path, flag: str, what: str) -> None:
    """A file made and removed in ``folder``: ``os.access`` says yes to root on any folder, and a
    read-only or special file system (/sys, /proc) refuses only the write itself. Not in an
    append-only folder, where that file would stay for good: ``path`` itself is refused (nothing
    could be replaced or cleaned up there), and a folder above it, where ``path`` is yet to be made
    (not append-only: the flag is not inherited), is asked ``os.access`` instead."""
    if _append_only(folder):
        if folder == path:
            raise InvalidInputError(
                f"{what} {path} is append-only (chattr +a): files can be added there but never replaced "
                f"or removed, which every write of trtforge does; pass {flag} with another folder, or run "
                f"chattr -a {path}"
            )
        if os.access(folder, os.W_OK | os.X_OK):
            return
    try:
        discard_temp(make_temp(folder, ".writable"))
    except OSError as exc:
        raise InvalidInputError(
            f"{what} {path} is not writable ({exc.strerror}); pass {flag} with a writable folder"
        ) from exc


#: Linux's ``FS_IOC_GETFLAGS`` (``_IOR('f', 1, long)``, the ioctl ``lsattr`` reads a file's flags
#: with, in the encoding of x86, Arm, RISC-V and s390; elsewhere no file system knows the number and
#: says so: ENOTTY) and the flag of ``chattr +a``
_FS_IOC_GETFLAGS = (2 << 30) | (struct.calcsize("l") << 16) | (ord("f") << 8) | 1
_FS_APPEND_FL = 0x20


def _append_only(folder: Path) -> bool:
    """Whether ``folder`` is append-only (``chattr +a``, Linux): a file can be made in it, but never
    removed or renamed, not even by root. False where that cannot be read (another system, a file
    system without such flags, a folder this user may not open)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return False
    try:
        flags = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(8))
    except OSError:
        return False
    finally:
        os.close(fd)
    return bool(struct.unpack_from("i", flags)[0] & _FS_APPEND_FL)


@contextlib.contextmanager
def staged_file(
    final: Path, durable: bool = True, *, exclusive: bool = False, mode: int | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it is fsynced (``durable``) and
    renamed into place. What can be derived again (a cache entry, a result handed from one
    process to another) skips the fsync: a crash only costs deriving it again.

    ``exclusive``: ``final`` is created, never replaced: the temporary is hard-linked to it, which
    fails with FileExistsError where ``final`` exists (even one made meanwhile by another process),
    so the file appears whole or not at all and clobbers nothing (a key ``keygen`` writes).
    ``mode``: the file's mode from its creation on (a private key's 0600), else the default.

    On any exception (Ctrl-C included) the temporary file is removed and ``final`` is untouched.
    A write the disk refuses (full, read-only, over quota) carries ``final`` as its file name when
    it has none (a write through a file object names no path), for the one line the user gets.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp(final.parent, final.name, mode=mode)
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        if exclusive:
            os.link(tmp, final)  # the temporary's name goes in ``finally``
        else:
            os.replace(tmp, final)
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(final)
        raise
    finally:
        discard_temp(tmp)


def atomic_write_bytes(final: Path, data: bytes, durable: bool = True) -> None:
    with staged_file(final, durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: Path, text: str, durable: bool = True) -> None:
    atomic_write_bytes(final, text.encode("utf-8"), durable)


#: what makes a path component a glob pattern (``glob.has_magic``, which is not public)
_GLOB_MAGIC = re.compile(r"[*?[]")


def folder_tree(folder: Path, *, follow_links: bool) -> set[str]:
    """``folder`` and every folder below it, as absolute paths: a file added to or removed from
    any of them changes one of their stamps."""
    below = os.walk(folder, followlinks=follow_links)
    return {os.path.abspath(folder)} | {
        os.path.abspath(os.path.join(parent, name)) for parent, names, _ in below for name in names
    }


def folders_a_glob_lists(pattern: str) -> set[str]:
    """The folders a glob of ``pattern`` lists: the one before its only wildcard part, or the
    whole tree under the first wildcard part (``**``, or wildcards in folder names)."""
    parts = Path(pattern).parts
    first = next((index for index, part in enumerate(parts) if _GLOB_MAGIC.search(part)), len(parts))
    base = Path(*parts[:first]) if first else Path(".")
    if first == len(parts):
        return set()
    if first == len(parts) - 1:
        return {os.path.abspath(base)}
    return folder_tree(base, follow_links=True)  # as glob.glob's "**" walks
