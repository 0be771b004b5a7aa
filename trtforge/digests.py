"""A file's sha256, taken once: streamed (a 2 GB engine needs no 2 GB of memory), started ahead
of need on a thread of its own (:func:`prefetch_digest`), and kept across runs by a stat-keyed
digest cache that never answers for a file that changed (:class:`FileStamp`).

The hashing itself is :mod:`trtforge.filehash`'s, which imports the standard library alone so that
``trtforge.cli.early`` can start it before anything else; what a digest may be trusted for, and
the cache, are this module's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from trtforge import filehash
from trtforge.fsutil import atomic_write_text
from trtforge.jsonsafe import cache_json
from trtforge.threads import beside


def sha256_file(path: Path, *, disk_cache: bool = True) -> str:
    """Hex sha256 of a file, streamed so that a 2 GB engine needs no 2 GB of memory; answered by
    the digest cache when the file is provably the one hashed before (:class:`FileStamp`), without
    opening it, and by the hash :func:`prefetch_digest` started, which it waits for.

    ``disk_cache=False`` where the digest decides whether to trust the bytes (an engine against its
    manifest, recorded provenance inputs): only this process's own hashes answer, never the cache on
    disk, which any process of this user writes (a CI cache restored from another job, too)."""
    known = known_digest(FileStamp.of(path, os.stat(path)), disk_cache=disk_cache)
    if known is not None:
        with contextlib.suppress(KeyError):
            _prefetches.pop(os.path.abspath(path)).cancel()  # its digest is not needed
        return known
    if _await_prefetch(path):
        known = known_digest(FileStamp.of(path, os.stat(path)), disk_cache=disk_cache)
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


def sha256_beside(data: bytes | memoryview) -> Callable[[], str]:
    """Start hashing ``data`` on a thread (hashlib releases the GIL), so that the hash overlaps
    what the caller does next (writing the same bytes); call the result for the digest."""
    return beside(lambda: sha256_bytes(data), "trtforge-sha256")


def data_sha256(files: Sequence[Path], *, disk_cache: bool = True) -> str:
    """Hash of the files' contents in order (not their paths: moving a data set keeps it);
    ``disk_cache`` as :func:`sha256_file`'s."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(sha256_file(path, disk_cache=disk_cache).encode("ascii") + b"\n")
    return digest.hexdigest()


def read_hashed(path: Path, size: int) -> tuple[bytearray, str]:
    """Read ``path`` (expected ``size`` bytes) into one preallocated buffer, hashing each chunk as
    it arrives: the bytes kept are the bytes hashed, and trusted (the loader deserializes them).
    When this process hashed the file already (its prefetch, a check before the load) and its stamp
    is the same before and after the read, the read skips hashing (the bytes are the file the digest
    was taken of: any write in between changes its ctime); the digest cache on disk is not asked."""
    _await_prefetch(path)
    buffer = bytearray(size)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        stamp = FileStamp.of(path, os.fstat(handle.fileno()))
        known = known_digest(stamp, disk_cache=False)
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


#: a file changed this recently may be written again within the same timestamp tick (coarse
#: kernel clocks, 1 s or 2 s file-system granularity) without its stamp changing: not cached
SETTLE_NS = 2_000_000_000
#: entries kept on disk (one small file each) and in memory; beyond it the oldest half goes
MAX_DIGESTS = 4096
_MAX_ENTRY_BYTES = 4096
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: digests this process took itself, and those it read from the cache on disk (``disk_cache``)
_memory: dict[FileStamp, str] = {}
_from_disk: dict[FileStamp, str] = {}


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

    @classmethod
    def current(cls, path: str | Path) -> FileStamp | None:
        """The stamp ``path`` has now; None where it does not exist (or cannot be read)."""
        try:
            return cls.of(Path(path), os.stat(path))
        except OSError:
            return None

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


def known_digest(stamp: FileStamp, *, disk_cache: bool = True) -> str | None:
    """The digest recorded for exactly this stamp: hashed by this process, then (``disk_cache``) read
    from the digest cache on disk; None for any other stamp, and for an entry that is unreadable,
    corrupt, oversized or not this user's."""
    if stamp in _memory:
        return _memory[stamp]
    if not disk_cache:
        return None
    if stamp in _from_disk:
        return _from_disk[stamp]
    try:
        with open(digest_dir() / stamp.entry_name(), "rb") as handle:
            owner = os.fstat(handle.fileno()).st_uid
            if hasattr(os, "getuid") and owner != os.getuid():
                return None
            data = handle.read(_MAX_ENTRY_BYTES + 1)
        # bounded: brackets nested past Python's recursion limit are damage too, not a RecursionError
        entry = cache_json(data, _MAX_ENTRY_BYTES)
        recorded = FileStamp(**{name: entry[name] for name in FileStamp.__dataclass_fields__})
        digest = entry["sha256"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if recorded != stamp or not isinstance(digest, str) or not _HEX64.match(digest):
        return None
    _keep(_from_disk, stamp, digest)
    return digest


def _keep(memory: dict[FileStamp, str], stamp: FileStamp, digest: str) -> None:
    if len(memory) >= MAX_DIGESTS:
        memory.clear()
    memory[stamp] = digest


def remember_digest(before: FileStamp, after: FileStamp, digest: str, read_ns: int | None = None) -> None:
    """Record ``digest`` when the file kept one stamp while it was hashed and had settled by the
    end of that read (``read_ns``, default now); a cache that cannot be written only costs the next
    run a hash."""
    if before != after or not before.settled(read_ns):
        return
    _keep(_memory, before, digest)
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
    _from_disk.clear()


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
