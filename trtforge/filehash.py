"""A file's sha256, read once, on the caller's thread or on one of its own, importing nothing but
the standard library's hashlib, os, sys, threading and time.

``trtforge.cli.early`` starts hashing the engine ``check`` is given before the CLI imports anything
else (typer, pydantic, trtforge's own modules: ~0.15 s, and ~40 ms of them are what
:mod:`trtforge.digests` imports), so the hash and the start-up overlap from the first
milliseconds. What a result may be trusted for, and the digest cache, are :mod:`trtforge.digests`'s.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time

#: read size: past 1 MiB larger reads hash no faster, and each costs its buffer in memory
CHUNK = 1024 * 1024
#: a background hash takes the GIL back after every read and every chunk hashed, waiting up to
#: the switch interval (5 ms) each time while the main thread imports: a short interval while a
#: prefetch runs, and few chunks, keep those waits small next to the hash; 8 MiB chunks are still
#: hashed while in the CPU's cache (16 MiB ones took 15-25% longer to hash here)
PREFETCH_CHUNK = 8 * 1024 * 1024
PREFETCH_SWITCH_S = 0.0002
#: the name of a prefetch's thread
PREFETCH_THREAD = "trtforge-prefetch-digest"

_switching = threading.Lock()
#: one entry per prefetch running; the first is the switch interval to restore when the last ends
_running: list[float] = []


class FileHash:
    """A file's sha256, its ``os.stat`` before and after the read (equal ones mean the bytes hashed
    were one content of the file), and when the read ended (``time.time_ns()``)."""

    __slots__ = ("after", "before", "digest", "read_ns")

    def __init__(self, digest: str, before: os.stat_result, after: os.stat_result, read_ns: int) -> None:
        self.digest = digest
        self.before = before
        self.after = after
        self.read_ns = read_ns


def hash_file(path: str, chunk: int = CHUNK, stop: threading.Event | None = None) -> FileHash | None:
    """Read ``path`` once, into one reused buffer (no new bytes object per chunk; no larger than
    the file, as zeroing 8 MiB costs more than hashing a small model), and hash it; None when
    ``stop`` was set before the end (checked between chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        before = os.fstat(handle.fileno())
        buffer = bytearray(max(1, min(chunk, before.st_size)))
        view = memoryview(buffer)
        while count := handle.readinto(buffer):
            if stop is not None and stop.is_set():
                return None
            digest.update(view[:count])
        after = os.fstat(handle.fileno())
        return FileHash(digest.hexdigest(), before, after, time.time_ns())


class Prefetch:
    """``hash_file(path)`` on a daemon thread, started at once (hashlib releases the GIL while it
    hashes, so it overlaps whatever the caller does meanwhile)."""

    def __init__(self, path: str) -> None:
        self._result: FileHash | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(path,), name=PREFETCH_THREAD, daemon=True)
        with _switching:
            _running.append(sys.getswitchinterval())
            sys.setswitchinterval(min(PREFETCH_SWITCH_S, _running[0]))
        try:
            self.thread.start()
        except BaseException:
            _end_one()
            raise

    def _run(self, path: str) -> None:
        try:
            # a file that cannot be read is reported by the reader that needs it, with its own message
            self._result = hash_file(path, PREFETCH_CHUNK, self._stop)
        except OSError:
            pass
        finally:
            _end_one()

    def cancel(self) -> None:
        """Stop after the chunk being hashed: its digest is not needed (the digest cache answered)."""
        self._stop.set()

    def result(self) -> FileHash | None:
        """The hash, once done; None when the file could not be read or the hash was cancelled."""
        self.thread.join()
        return self._result


def _end_one() -> None:
    """A prefetch ended: the last one restores the switch interval the process had."""
    with _switching:
        original = _running.pop()
        if not _running:
            sys.setswitchinterval(original)
