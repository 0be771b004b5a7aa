"""``dir://PATH``: a plain directory registry, laid out exactly like ``trtforge build --out``.

Flat files, ``{stem}.engine`` beside ``{stem}.manifest.json`` (stem = the OCI tag) and, when
the manifest describes it, ``{stem}.accuracy.json``, so a build output folder is already a
registry and a registry folder can be checked file by file. The files are written as one commit
(:mod:`trtforge.artifact`), ``--force`` included: after any interrupt the folder holds the
previous set or the new one.
"""

from __future__ import annotations

from pathlib import Path

from trtforge.digests import sha256_bytes, sha256_file
from trtforge.errors import InvalidInputError, RegistryError
from trtforge.fsutil import check_inside
from trtforge.manifest import MAX_REPORT_BYTES, Manifest, manifest_path_for, report_path
from trtforge.publish.base import (
    Candidate,
    DirLocation,
    Existing,
    Listing,
    LocalArtifact,
    PublishOutcome,
    decide,
    matches,
    written_status,
)
from trtforge.publish.local import (
    clean_up,
    commit_pair,
    copy_out,
    existing_manifest,
    io_error,
    repository_lock,
)
from trtforge.selection import list_artifacts


class DirRegistry:
    def __init__(self, location: DirLocation) -> None:
        self.root = location.path
        self.uri = location.uri

    def publish(self, artifact: LocalArtifact, *, force: bool = False) -> PublishOutcome:
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInputError(f"{self.uri}: {self.root} is a file, not a directory; choose another path")
        engine_final = self.root / artifact.manifest.artifact.file
        manifest_final = manifest_path_for(engine_final)
        check_inside(self.root, engine_final, f"{self.uri}: artifact.file")
        report_final = report_path(self.root, artifact.manifest.stem)
        warnings = (artifact.report_warning,) if artifact.report_warning else ()
        with repository_lock(self.root):
            notes = clean_up(self.root, depth=1)
            existing = _existing(engine_final, manifest_final, report_final)
            action, detail = decide(existing, artifact, force, str(engine_final))
            if action == "unchanged":
                return PublishOutcome("unchanged", str(engine_final), detail, warnings, notes=notes)
            same_engine = existing is not None and existing.engine_sha256 == artifact.manifest.artifact.sha256
            notes += commit_pair(
                self.root, artifact, engine_final.name, manifest_final.name, whole_set=True, same_engine=same_engine
            )
        status = written_status(action)
        return PublishOutcome(status, str(engine_final), detail, warnings, notes=notes)

    def candidates(self, name: str, precision: str | None) -> Listing:
        """The folder listed as the loader lists one (``selection.list_artifacts``: hidden entries
        never looked at, a manifest without its engine left out, an unreadable one skipped and
        said)."""
        if not self.root.is_dir():
            problem = "is not a directory" if self.root.exists() else "no such directory"
            raise RegistryError(f"{self.uri}: {problem}; check the path (publish creates it)")
        try:
            folder = list_artifacts(self.root)
        except OSError as exc:
            raise io_error("list", self.root, exc) from exc
        found: list[Candidate] = []
        others: list[str] = []
        skipped = list(folder.skipped)
        for listed in folder.artifacts:
            candidate = Candidate(str(listed.engine), listed.manifest, listed.manifest_bytes, locator=listed.engine)
            if matches(candidate.manifest, name, precision):
                found.append(candidate)
            else:
                others.append(candidate.manifest.stem)
        return Listing(tuple(found), tuple(others), tuple(skipped))

    def fetch(self, candidate: Candidate, into: Path) -> None:
        copy_out(candidate.locator, into, candidate.manifest.artifact.size)

    def report(self, candidate: Candidate) -> bytes | None:
        """``{stem}.accuracy.json`` beside the engine (None: none there), read no further than a
        report may go (``base.report_problem`` refuses one larger)."""
        path = report_path(candidate.locator.parent, candidate.manifest.stem)
        try:
            with open(path, "rb") as handle:
                return handle.read(MAX_REPORT_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise io_error("read", path, exc) from exc


def _existing(engine: Path, manifest_path: Path, report: Path) -> Existing | None:
    current = existing_manifest(manifest_path)
    if current is None:
        return None
    if not isinstance(current, Manifest) or not engine.is_file():
        return Existing(None, None)
    # hash the engine really there: a damaged copy must not pass for "the same content"
    report_sha256 = sha256_file(report, disk_cache=False) if report.is_file() else None
    engine_sha256 = sha256_file(engine, disk_cache=False)
    return Existing(engine_sha256, sha256_bytes(manifest_path.read_bytes()), report_sha256=report_sha256)
