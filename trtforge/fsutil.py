"""Atomic writes, streamed hashing, and the names of temporaries: a failed run never leaves a
partial artifact, and a killed one leaves only temporaries the next run recognises.

Every temporary trtforge creates beside a final file is named ``.{base}.{pid}-{token}.{kind}``
(``kind`` ends in ``.tmp``): the owner's pid lets the next run tell a live writer's file from a
dead one's (:func:`trtforge.artifact.sweep`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from trtforge.errors import InvalidInputError

_CHUNK = 4 * 1024 * 1024

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
    """Hex sha256 of a file, streamed so that a 2 GB engine needs no 2 GB of memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_hashed(path: Path, size: int) -> tuple[bytearray, str]:
    """Read ``path`` (expected ``size`` bytes) into one preallocated buffer, hashing each chunk as
    it arrives: the bytes kept are the bytes hashed."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    digest = hashlib.sha256()
    offset = 0
    with open(path, "rb", buffering=0) as handle:
        while offset < size:
            count = handle.readinto(view[offset : offset + _CHUNK])
            if not count:
                break
            digest.update(view[offset : offset + count])
            offset += count
        tail = handle.read(_CHUNK)
    view.release()
    if tail or offset != size:  # the file changed size while being read: hash what is really there
        del buffer[offset:]
        buffer.extend(tail)
        return buffer, hashlib.sha256(buffer).hexdigest()
    return buffer, digest.hexdigest()


@dataclass(frozen=True)
class TempName:
    """What a temporary's name says: the final file it stands for, its owner, its kind."""

    base: str
    pid: int | None  # None: a legacy name without the owner's pid
    kind: str

    @classmethod
    def parse(cls, name: str) -> TempName | None:
        found = TEMP_PATTERN.match(name)
        if found:
            return cls(found["base"], int(found["pid"]), found["kind"])
        if LEGACY_TEMP_PATTERN.match(name):
            return cls(name, None, "tmp")
        return None


def temp_prefix(base: str) -> str:
    """``mkstemp``/``mkdtemp`` prefix of a temporary standing for ``base``, owned by this process."""
    return f".{base}.{os.getpid()}-"


def make_temp(folder: Path, base: str, suffix: str = TEMP_SUFFIX) -> Path:
    """A new empty temporary file in ``folder`` (mode as ``open(..., "w")`` gives), named for ``base``."""
    fd, name = tempfile.mkstemp(prefix=temp_prefix(base), suffix=suffix, dir=folder)
    os.close(fd)
    os.chmod(name, _FILE_MODE)
    return Path(name)


def make_temp_dir(folder: Path, base: str) -> Path:
    """A new temporary folder in ``folder`` named for ``base`` (0700, as ``mkdtemp`` makes it)."""
    return Path(tempfile.mkdtemp(prefix=temp_prefix(base), suffix=TEMP_SUFFIX, dir=folder))


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
        raise InvalidInputError(
            f"cannot create {what} {path}: {exc.strerror}; pass {flag} with a writable folder"
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{what} {path} is not writable; pass {flag} with a writable folder")
    return path


@contextlib.contextmanager
def staged_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it is fsynced and renamed into place.

    On any exception (Ctrl-C included) the temporary file is removed and ``final`` is untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp(final.parent, final.name)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(final: Path, data: bytes) -> None:
    with staged_file(final) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: Path, text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))
