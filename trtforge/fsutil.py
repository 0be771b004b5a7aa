"""Atomic writes, streamed hashing (with a stat-keyed digest cache), and the names of
temporaries: a failed run never leaves a partial artifact, and a killed one leaves only
temporaries the next run recognises.

Every temporary trtforge creates beside a final file is named ``.{base}.{pid}-{token}.{kind}``
(``kind`` ends in ``.tmp``), and its owner holds an exclusive ``flock`` on it for as long as it
owns it: the next run tells a live writer's file from a dead one's (:func:`trtforge.artifact.sweep`)
by that lock first, which holds across pid namespaces (a container sharing the folder, whose pids
mean nothing here) and dies with its holder, and by the pid in the name only where the lock says
nothing (a file system without ``flock``, or a writer that took none).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import json
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

try:
    import fcntl
except ImportError:  # not POSIX: no flock, a temporary's liveness is judged by its pid alone
    fcntl = None  # type: ignore[assignment]

from trtforge import filehash
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


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed so that a 2 GB engine needs no 2 GB of memory; answered by
    the digest cache when the file is provably the one hashed before (:class:`FileStamp`), without
    opening it, and by the hash :func:`prefetch_digest` started, which it waits for."""
    known = known_digest(FileStamp.of(path, os.stat(path)))
    if known is not None:
        with contextlib.suppress(KeyError):
            _prefetches.pop(os.path.abspath(path)).cancel()  # its digest is not needed
        return known
    if _await_prefetch(path):
        known = known_digest(FileStamp.of(path, os.stat(path)))
    return known if known is not None else _hash_file(path)


def _hash_file(path: Path, chunk: int = filehash.CHUNK) -> str:
    hashed = filehash.hash_file(str(path), chunk)
    assert hashed is not None  # nothing stops a hash without ``stop``
    _remember(path, hashed)
    return hashed.digest


def _remember(path: Path, hashed: filehash.FileHash | None) -> None:
    if hashed is not None:
        before, after = FileStamp.of(path, hashed.before), FileStamp.of(path, hashed.after)
        remember_digest(before, after, hashed.digest, hashed.read_ns)


def _await_prefetch(path: Path) -> bool:
    """Wait for the hash started ahead for ``path``, if any, and record it (True: there was one)."""
    prefetch = _prefetches.pop(os.path.abspath(path), None)
    if prefetch is not None:
        _remember(path, prefetch.result())
    return prefetch is not None


#: hashes started ahead of need, by absolute path (each one is taken once, by the first reader)
_prefetches: dict[str, filehash.Prefetch] = {}


def prefetch_digest(path: Path) -> None:
    """Start hashing ``path`` on a daemon thread, unless the digest cache knows it, so the hash
    overlaps whatever runs meanwhile; the next :func:`sha256_file` of ``path`` waits for it and
    answers from its result (the digest cache) instead of reading the file again."""
    with contextlib.suppress(OSError):  # a file that cannot be read is reported by its reader
        if os.path.abspath(path) in _prefetches or known_digest(FileStamp.of(path, os.stat(path))) is not None:
            return
    adopt_prefetch(path, filehash.Prefetch(os.path.abspath(path)))


def adopt_prefetch(path: Path | str, prefetch: filehash.Prefetch) -> None:
    """Make a hash started elsewhere (``trtforge.cli.early``, before this module was imported)
    the one :func:`sha256_file` of ``path`` waits for."""
    _prefetches.setdefault(os.path.abspath(path), prefetch)


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def beside(work: Callable[[], T], name: str, *, daemon: bool = False) -> Callable[[], T]:
    """Run ``work`` on a thread of its own, so that it overlaps what the caller does next: work that
    releases the GIL or wants it little (hashing, fsync, onnxruntime's runs beside TensorRT's
    build). Call the result to wait for its value; its exception is raised there. The interpreter
    waits for the thread at exit, so a cache file it writes is never cut short; a ``daemon`` one
    (work whose result is dropped unless waited for, like the flush of a staged file) it does not."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # raised again in the caller's thread, where it is waited for
            failure.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=daemon)
    thread.start()

    def result() -> T:
        thread.join()
        if failure:
            raise failure[0]
        return outcome[0]

    return result


def sha256_beside(data: bytes | memoryview) -> Callable[[], str]:
    """Start hashing ``data`` on a thread (hashlib releases the GIL), so that the hash overlaps
    what the caller does next (writing the same bytes); call the result for the digest."""
    return beside(lambda: sha256_bytes(data), "trtforge-sha256")


def data_sha256(files: Sequence[Path]) -> str:
    """Hash of the files' contents in order (not their paths: moving a data set keeps it)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(sha256_file(path).encode("ascii") + b"\n")
    return digest.hexdigest()


def read_hashed(path: Path, size: int) -> tuple[bytearray, str]:
    """Read ``path`` (expected ``size`` bytes) into one preallocated buffer, hashing each chunk as
    it arrives: the bytes kept are the bytes hashed. When the digest cache knows the file and its
    stamp is the same before and after the read, the read skips hashing (the bytes are the file
    the digest was taken of: any write in between changes its ctime)."""
    _await_prefetch(path)
    buffer = bytearray(size)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        stamp = FileStamp.of(path, os.fstat(handle.fileno()))
        known = known_digest(stamp)
        digest = hashlib.sha256() if known is None else None
        offset = 0
        while offset < size:
            count = handle.readinto(view[offset : offset + filehash.CHUNK])
            if not count:
                break
            if digest is not None:
                digest.update(view[offset : offset + count])
            offset += count
        tail = handle.read(filehash.CHUNK)
        after = FileStamp.of(path, os.fstat(handle.fileno()))
    view.release()
    if tail or offset != size:  # the file changed size while being read: hash what is really there
        del buffer[offset:]
        buffer.extend(tail)
        return buffer, hashlib.sha256(buffer).hexdigest()
    if known is not None and after == stamp:
        return buffer, known
    hexdigest = digest.hexdigest() if digest is not None else hashlib.sha256(buffer).hexdigest()
    remember_digest(stamp, after, hexdigest)
    return buffer, hexdigest


# ---------------------------------------------------------------- the digest cache

#: a file changed this recently may be written again within the same timestamp tick (coarse
#: kernel clocks, 1 s or 2 s file-system granularity) without its stamp changing: not cached
SETTLE_NS = 2_000_000_000
#: entries kept on disk (one small file each) and in memory; beyond it the oldest half goes
MAX_DIGESTS = 4096
_MAX_ENTRY_BYTES = 4096
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_memory: dict[FileStamp, str] = {}


@dataclass(frozen=True)
class FileStamp:
    """What identifies one content of one file without reading it: path, inode, size, mtime and
    ctime. Any write changes ctime, and no user tool can set ctime back (``os.utime`` sets mtime
    only), so an equal stamp means the bytes hashed under it, provided the file had settled
    (:data:`SETTLE_NS`) when it was hashed."""

    path: str
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: Path, status: os.stat_result) -> FileStamp:
        return cls(
            os.path.abspath(path),
            status.st_dev,
            status.st_ino,
            status.st_size,
            status.st_mtime_ns,
            status.st_ctime_ns,
        )

    def settled(self, since_ns: int | None = None) -> bool:
        """Last changed more than SETTLE_NS before ``since_ns`` (default: now)."""
        return (time.time_ns() if since_ns is None else since_ns) - max(self.mtime_ns, self.ctime_ns) > SETTLE_NS

    def entry_name(self) -> str:
        return f"{sha256_bytes(self.path.encode('utf-8', 'surrogateescape'))}.json"


def digest_dir() -> Path:
    """``digests/`` of the host's cache folder, read when used (so ``TRTFORGE_CACHE_DIR`` set
    later, by a test or a CI step, counts)."""
    from trtforge.cache import default_cache_dir

    return default_cache_dir() / "digests"


def known_digest(stamp: FileStamp) -> str | None:
    """The digest recorded for exactly this stamp (this process first, then the digest cache);
    None for any other stamp, and for an entry that is unreadable, corrupt, oversized or not
    this user's."""
    if stamp in _memory:
        return _memory[stamp]
    try:
        with open(digest_dir() / stamp.entry_name(), "rb") as handle:
            owner = os.fstat(handle.fileno()).st_uid
            if hasattr(os, "getuid") and owner != os.getuid():
                return None
            data = handle.read(_MAX_ENTRY_BYTES + 1)
        if len(data) > _MAX_ENTRY_BYTES:
            return None
        entry = json.loads(data)
        recorded = FileStamp(**{name: entry[name] for name in FileStamp.__dataclass_fields__})
        digest = entry["sha256"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if recorded != stamp or not isinstance(digest, str) or not _HEX64.match(digest):
        return None
    _memory[stamp] = digest
    return digest


def remember_digest(before: FileStamp, after: FileStamp, digest: str, read_ns: int | None = None) -> None:
    """Record ``digest`` when the file kept one stamp while it was hashed and had settled by the
    end of that read (``read_ns``, default now); a cache that cannot be written only costs the next
    run a hash."""
    if before != after or not before.settled(read_ns):
        return
    if len(_memory) >= MAX_DIGESTS:
        _memory.clear()
    _memory[before] = digest
    folder = digest_dir()
    entry = {**dataclasses.asdict(before), "sha256": digest}
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # not durable: a torn entry after a crash is corrupt JSON or a wrong stamp, both ignored
        atomic_write_text(folder / before.entry_name(), json.dumps(entry), durable=False)
        _bound(folder)


def forget_digests() -> None:
    """Empty this process's memory of digests (the cache on disk stays): to measure a cold hash."""
    _memory.clear()


def _bound(folder: Path) -> None:
    """Keep at most :data:`MAX_DIGESTS` entries: past it, the least recently written half goes."""
    with os.scandir(folder) as scan:
        entries = [item for item in scan if item.name.endswith(".json")]
    if len(entries) <= MAX_DIGESTS:
        return
    entries.sort(key=lambda item: item.stat().st_mtime_ns)
    for item in entries[: len(entries) - MAX_DIGESTS // 2]:
        with contextlib.suppress(OSError):
            os.unlink(item.path)


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

#: the temporaries this process owns, by the path it made them under: a descriptor holding an
#: exclusive flock on each (on its inode, so the lock follows a rename), closed by release_temp
_owned: dict[str, int] = {}


def _forget_owned() -> None:
    """In a forked child: the parent's temporaries are not the child's (closing the inherited
    descriptors leaves the parent's locks in place: they belong to its open file descriptions)."""
    for fd in _owned.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _owned.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_owned)


def wait_for_lock(fd: int) -> bool:
    """An exclusive flock on ``fd``, waited for. False where there is none to take: no flock on
    this platform (Windows) or this file system (some network and FUSE ones)."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        return False
    return True


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
            _owned[str(path)] = fd
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
    fd = _owned.pop(str(path), None)
    if fd is not None:
        os.close(fd)


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
    fd = _owned.pop(str(source), None)
    if fd is not None:
        _owned[str(target)] = fd


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
    _owned[str(link)] = fd


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


def check_inside(root: Path, path: Path, what: str) -> None:
    """Refuse (exit 2) a ``path`` that resolves outside ``root``: a name read from a manifest, a
    registry or a flag never reaches a file outside the folder it belongs to."""
    base = root.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise InvalidInputError(f"{what}: {path} lies outside {root}: refused")


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
        raise InvalidInputError(
            f"{what} {path} is a link to {os.readlink(path)}, which does not exist; pass {flag} with a writable folder"
        )
    existing = next(folder for folder in (path, *path.absolute().parents) if folder.exists())
    if not existing.is_dir():
        problem = "is a file" if existing == path else f"cannot be made: {existing} is a file"
        raise InvalidInputError(f"{what} {path} {problem}; pass {flag} with a writable folder")
    _prove_writable(existing, path, flag, what)


def check_report_file(path: Path, flag: str) -> None:
    """A report a command writes at its end (``--junit``, ``$GITHUB_STEP_SUMMARY``), checked before its
    work: not a folder, and in a folder it can write (else the whole run would fail at its end)."""
    if path.is_dir():
        raise InvalidInputError(f"{flag} {path} is a folder; point it at a file, e.g. {path / 'report.xml'}")
    check_writable_dir(path.parent, flag, f"folder of {flag}")


def _prove_writable(folder: Path, path: Path, flag: str, what: str) -> None:
    """A file made and removed in ``folder``: ``os.access`` says yes to root on any folder, and a
    read-only or special file system (/sys, /proc) refuses only the write itself."""
    try:
        discard_temp(make_temp(folder, ".writable"))
    except OSError as exc:
        raise InvalidInputError(
            f"{what} {path} is not writable ({exc.strerror}); pass {flag} with a writable folder"
        ) from exc


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
