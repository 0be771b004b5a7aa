"""Atomic writes and streamed hashing: a failed run never leaves a partial artifact."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from trtforge.errors import InvalidInputError

_CHUNK = 4 * 1024 * 1024


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


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove it is writable, with an error that says how to fix it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot create output directory {path}: {exc.strerror}; pass --out with a writable folder"
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise InvalidInputError(f"output directory {path} is not writable; pass --out with a writable folder")
    return path


@contextlib.contextmanager
def staged_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success it is fsynced and renamed into place.

    On any exception (Ctrl-C included) the temporary file is removed and ``final`` is untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, _FILE_MODE)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(final: Path, data: bytes) -> None:
    with staged_file(final) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: Path, text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))
