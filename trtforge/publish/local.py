"""File-system pieces shared by the ``dir://`` and ``triton://`` registries.

Both write an engine and its manifest (``dir://``: and its accuracy report) as one commit
(:mod:`trtforge.artifact`: the folder holds the old set or the new one, whatever interrupts the
write), serialize publishers with a lock file, so two CI jobs never both win the same tag or
version number, and clean up what dead publishers left while they hold that lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from trtforge import filehash
from trtforge.artifact import ArtifactWriter, sweep
from trtforge.errors import IncompatibleEngineError, InvalidInputError, RegistryError, TrtforgeError, disk_error
from trtforge.fsutil import (  # fcntl: None where there is no flock (Windows)
    close_lock,
    copy_at_most,
    fcntl,
    open_lock,
    open_without_blocking,
    staged_file,
    wait_for_lock,
)
from trtforge.manifest import Manifest, parse_manifest, read_manifest_bytes
from trtforge.publish.base import Candidate, LocalArtifact

LOCK_NAME = ".trtforge.lock"
LOCK_TIMEOUT_S = 120.0


def io_error(action: str, path: Path, exc: OSError) -> TrtforgeError:
    """A file registry's I/O failure (exit 6), or the disk refusing a write (full, read-only: exit 2),
    or a path that runs through a file (exit 2, as a path that is a file is)."""
    full = disk_error(exc, path)
    if full is not None:
        return full
    if exc.errno == errno.ENOTDIR:
        return InvalidInputError(
            f"cannot {action} {path}: part of the path is a file, not a folder; choose another path"
        )
    reason = exc.strerror or type(exc).__name__
    return RegistryError(f"cannot {action} {path}: {reason}; check the path and its permissions")


@contextlib.contextmanager
def repository_lock(root: Path) -> Iterator[None]:
    """Hold ``root/.trtforge.lock`` (an OS file lock, released even if the process dies), waiting
    for another publish at most ``LOCK_TIMEOUT_S``. ``flock`` on the descriptor ``open_lock`` gives,
    as the artifact's lock takes it, not filelock's lock: filelock takes a path, never a descriptor,
    and opens the file read-write, so in a registry folder users share (/tmp's 1777, a team's
    setgid 2775) no other user could open the first publisher's lock file, and each of their
    publishes was exit 6; flock needs only read access. filelock where there is no flock (Windows)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error("create registry directory", root, exc) from exc
    path = root / LOCK_NAME
    busy = f"{root}: another publish held {LOCK_NAME} for {LOCK_TIMEOUT_S:.0f} s; retry when it is done"
    if fcntl is None:
        from filelock import FileLock, Timeout

        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout as exc:  # an OSError
            raise RegistryError(busy) from exc
        except OSError as exc:
            raise io_error("lock", path, exc) from exc
        try:
            yield
        finally:
            lock.release()
        return
    try:
        fd = open_lock(path)
    except OSError as exc:
        raise io_error("lock", path, exc) from exc
    try:
        try:  # False where the file system has no flock: the descriptor holds nothing, as the artifact's
            wait_for_lock(fd, LOCK_TIMEOUT_S)
        except TimeoutError as exc:
            raise RegistryError(busy) from exc
        yield
    finally:
        close_lock(fd)  # releases the flock


def commit_pair(
    folder: Path,
    artifact: LocalArtifact,
    engine_name: str,
    manifest_name: str,
    lock_folder: Path | None = None,
    whole_set: bool = False,
    same_engine: bool = False,
) -> tuple[str, ...]:
    """Copy the engine (streamed, any size, proven the manifest's as it is copied: ``_copy_engine``)
    and its manifest into ``folder`` as one commit, under the artifact's lock in ``lock_folder``
    (default ``folder``); returns the commit's sweep note, if it cleaned anything up (as
    :func:`clean_up`). ``whole_set``: a registry that keeps the files under the artifact's own
    names (``dir://``), where the commit replaces the artifact's set (``same_engine``: the engine
    there is this one): see :func:`_replace_set`."""
    manifest = artifact.manifest
    try:
        with ArtifactWriter(folder, manifest.name, manifest.precision, lock_folder) as writer:
            _copy_engine(artifact, writer.stage(engine_name))
            writer.write(manifest_name, artifact.manifest_bytes)
            if whole_set:
                _replace_set(writer, artifact, folder / engine_name, same_engine)
            note = writer.commit().note
    except OSError as exc:
        raise io_error("write", folder / engine_name, exc) from exc
    return (note,) if note else ()


def _replace_set(writer: ArtifactWriter, artifact: LocalArtifact, engine_final: Path, same_engine: bool) -> None:
    """The artifact's other files: a new engine replaces them all (a report or attestation of the
    replaced engine would stay). Around the same engine the report is replaced (or removed: none
    goes up), and the attestation stays while it covers the manifest: its subjects are the engine
    and the manifest (``provenance.statement``), and the report is pinned by the manifest itself
    (``report_sha256``), so a report replaced around them leaves it true."""
    if not same_engine:
        writer.replace_whole(artifact.manifest.stem)
    else:
        from trtforge.provenance import stale_attestation

        stale = stale_attestation(engine_final, artifact.manifest_bytes)
        if stale is not None:
            writer.remove(stale.name)
        if artifact.report is None:
            writer.remove(artifact.report_name)
    if artifact.report is not None:
        writer.write(artifact.report_name, artifact.report)


def _copy_engine(artifact: LocalArtifact, staged: Path) -> None:
    """Copy the engine into ``staged``, hashing the bytes copied: rule 5 (``compat.content_problem``)
    on them, else exit 5 and nothing is committed. ``load_local_artifact`` checked the file, but a
    rebuild may have replaced it since, and the copy is what lands beside the manifest. Read no
    further than the manifest's size allows, and without blocking (as :func:`copy_out`)."""
    import hashlib

    from trtforge.compat import ArtifactFacts, content_problem

    digest = hashlib.sha256()
    size = 0

    def hashed(handle: BinaryIO) -> Iterator[bytes]:
        nonlocal size
        for chunk in iter(lambda: handle.read(filehash.CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
            yield chunk

    with open(artifact.engine, "rb", opener=open_without_blocking) as handle, open(staged, "wb") as out:
        copy_at_most(hashed(handle), out, artifact.manifest.artifact.size)
    problem = content_problem(artifact.manifest, ArtifactFacts(engine_size=size, engine_sha256=digest.hexdigest()))
    if problem:
        raise IncompatibleEngineError(
            f"{artifact.engine}: refusing to publish: it changed after it was checked (rebuilt meanwhile?), "
            f"nothing was published: {problem}",
            reasons=[problem],
        )


def clean_up(root: Path, depth: int) -> tuple[str, ...]:
    """Under the repository lock: undo dead publishers' interrupted commits, remove their temporaries."""
    note = sweep(root, depth).note
    return (note,) if note else ()


def place_bytes(data: bytes, final: Path) -> None:
    try:
        with staged_file(final) as staged:
            staged.write_bytes(data)
    except OSError as exc:
        raise io_error("write", final, exc) from exc


def copy_out(source: Path, into: Path, size: int) -> None:
    """Fetch for file registries: a streamed copy of at most ``size`` bytes, the engine's size as its
    manifest declares it (the caller verifies the bytes): a larger file, or a device such as
    /dev/zero behind the engine's name, cannot make trtforge write more. Anything but a regular file
    is refused, opened without blocking (a FIFO would wait for a writer)."""
    try:
        with open(source, "rb", opener=open_without_blocking) as handle, open(into, "wb") as out:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise RegistryError(f"{source}: the engine is not a regular file; publish the artifact again")
            if not copy_at_most(iter(lambda: handle.read(filehash.CHUNK), b""), out, size):
                raise RegistryError(
                    f"{source}: the engine is larger than the {size:,} bytes its manifest declares; "
                    "publish the artifact again"
                )
    except OSError as exc:  # a full disk is the destination's; anything else, the registry's file
        raise disk_error(exc, into) or io_error("read", source, exc) from exc


def read_candidate(manifest_path: Path, engine: Path) -> Candidate:
    """A candidate from a manifest file; InvalidInputError when it is not a trtforge manifest."""
    try:
        data = read_manifest_bytes(manifest_path)
    except OSError as exc:
        raise io_error("read", manifest_path, exc) from exc
    manifest = parse_manifest(data, str(manifest_path))
    return Candidate(reference=str(engine), manifest=manifest, manifest_bytes=data, locator=engine)


def existing_manifest(path: Path) -> Manifest | InvalidInputError | None:
    """The manifest at ``path``: None when absent, the parse error when it is not a trtforge manifest."""
    if not path.is_file():
        return None
    try:
        return parse_manifest(read_manifest_bytes(path), str(path))
    except InvalidInputError as exc:
        return exc
    except OSError as exc:
        raise io_error("read", path, exc) from exc
