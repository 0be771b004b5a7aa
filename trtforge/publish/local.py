"""File-system pieces shared by the ``dir://`` and ``triton://`` registries.

Both stage every file under a hidden temporary name and rename it into place, and serialize
publishers with a lock file, so a reader (``pull``, Triton's repository poller) never sees a
half-written artifact and two CI jobs never both win the same tag or version number.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from trtforge.errors import InvalidInputError, RegistryError
from trtforge.fsutil import staged_file
from trtforge.manifest import Manifest, parse_manifest
from trtforge.publish.base import Candidate, check_artifact_file_name

LOCK_NAME = ".trtforge.lock"
LOCK_TIMEOUT_S = 120.0


def io_error(action: str, path: Path, exc: OSError) -> RegistryError:
    reason = exc.strerror or type(exc).__name__
    return RegistryError(f"cannot {action} {path}: {reason}; check the path and its permissions")


@contextlib.contextmanager
def repository_lock(root: Path) -> Iterator[None]:
    """Hold ``root/.trtforge.lock`` (an OS file lock, released even if the process dies)."""
    from filelock import FileLock, Timeout

    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error("create registry directory", root, exc) from exc
    lock = FileLock(str(root / LOCK_NAME), timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            yield
    except Timeout as exc:
        raise RegistryError(
            f"{root}: another publish held {LOCK_NAME} for {LOCK_TIMEOUT_S:.0f} s; retry when it is done"
        ) from exc
    except PermissionError as exc:
        raise io_error("lock", root / LOCK_NAME, exc) from exc


def place_copy(source: Path, final: Path) -> None:
    """Copy ``source`` to a hidden temporary beside ``final``, fsync, rename (streamed, any size)."""
    try:
        with staged_file(final) as staged:
            shutil.copyfile(source, staged)
    except OSError as exc:
        raise io_error("write", final, exc) from exc


def place_bytes(data: bytes, final: Path) -> None:
    try:
        with staged_file(final) as staged:
            staged.write_bytes(data)
    except OSError as exc:
        raise io_error("write", final, exc) from exc


def copy_out(source: Path, into: Path) -> None:
    """Fetch for file registries: a plain streamed copy (the caller verifies the bytes)."""
    try:
        shutil.copyfile(source, into)
    except OSError as exc:
        raise io_error("read", source, exc) from exc


def read_candidate(manifest_path: Path, engine: Path) -> Candidate:
    """A candidate from a manifest file; InvalidInputError when it is not a trtforge manifest."""
    try:
        data = manifest_path.read_bytes()
    except OSError as exc:
        raise io_error("read", manifest_path, exc) from exc
    manifest = parse_manifest(data.decode("utf-8", errors="replace"), str(manifest_path))
    check_artifact_file_name(manifest, str(manifest_path))
    return Candidate(reference=str(engine), manifest=manifest, manifest_bytes=data, locator=engine)


def existing_manifest(path: Path) -> Manifest | InvalidInputError | None:
    """The manifest at ``path``: None when absent, the parse error when it is not a trtforge manifest."""
    if not path.is_file():
        return None
    try:
        return parse_manifest(path.read_text(encoding="utf-8", errors="replace"), str(path))
    except InvalidInputError as exc:
        return exc
    except OSError as exc:
        raise io_error("read", path, exc) from exc
