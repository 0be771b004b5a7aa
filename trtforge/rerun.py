"""Unchanged ``trtforge ci`` reruns, answered from a record of what the last such run saw.

A run in which every spec was unchanged records the stamp (:class:`trtforge.digests.FileStamp`:
inode, size, mtime and ctime) of everything its verdict rests on: the folders searched for specs,
every spec and project file, each spec's model (with its external data files), labels and data
files and the folders its data globs list, and each artifact's files (engine, manifest, report,
attestation: present or not) and build-cache record, with the backend each spec resolved to.
The next run of the same command line (its ``$HOME``, signing key and trusted keys included) whose stamps all
match, and whose backends resolve to the same versions, is that run again: it reports the same
results without parsing a spec or reading an artifact, so it costs a stat per file (constant per
spec, flat in model size). Anything else runs in full, and records again. Only files that had
settled before the recording run started are recorded (any write changes ctime, which no user tool
sets back), so a file changed during or after that run never matches. While ``--out`` holds a
commit's temporaries (a live writer's, or a killed one's that only the full run sweeps), nothing is
replayed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from trtforge import __version__
from trtforge.ci import (
    RECORD_FILE,
    CiOptions,
    CiReport,
    ReportFiles,
    SpecResult,
    SpecStatus,
    build_input_paths,
    run_ci,
)
from trtforge.digests import FileStamp
from trtforge.errors import TrtforgeError
from trtforge.fsutil import atomic_write_text, folder_tree
from trtforge.jsonsafe import cache_json, json_sha256
from trtforge.mixedprecision import GRAPH_REVISIONS

#: ``{cache}/ci-reruns/{command line key}.json``
RERUN_DIR = "ci-reruns"
MAX_RERUN_BYTES = 16 * 1024 * 1024


def rerun_file(targets: list[Path], options: CiOptions) -> Path:
    """The record of one command line: its targets, working folder, output folder and backend, this
    trtforge and Python, the key it signs with and the keys it trusts, and the home folder a spec's
    ``~/`` paths resolve to (the record watches the files they resolved to: another ``$HOME`` is
    another set of files)."""
    line = [
        __version__,
        GRAPH_REVISIONS,
        sys.executable,
        [os.path.abspath(target) for target in targets],
        os.getcwd(),  # the report's paths are relative to it, as the full run prints them
        os.path.abspath(options.out_dir),
        options.backend,
        options.remote_cache,
        options.triton,
        options.cc,
        options.signing_key.key_id if options.signing_key else None,
        sorted(key.key_id for key in options.trusted_keys),  # whose attestation added since keeps a set unchanged
        os.path.expanduser("~"),
    ]
    key = json_sha256(line)
    return options.cache_dir / RERUN_DIR / f"{key}.json"


def run_or_replay(targets: list[Path], options: CiOptions, jobs: int, reporter: Any, reports: ReportFiles) -> CiReport:
    """``trtforge ci``: the recorded report when nothing its last all-unchanged run rested on
    changed, else the project discovered and built (the project file's ``triton`` unless
    ``options`` names a release), and recorded for the next run (keyed by the command line, as
    :func:`replay` looks it up). Either way a report file that is one of the run's inputs is
    refused first (``reports``)."""
    report = replay(targets, options, jobs, reporter, reports)  # the project file is among what a replay rests on
    if report is not None:
        return report
    from trtforge.project import discover  # not before: a replay never imports the spec model

    started_ns = time.time_ns()
    project = discover(targets)
    reports.refuse_inputs(project.input_files())
    for note in project.notes:
        reporter.info(note)
    with_project = dataclasses.replace(options, triton=options.triton or project.settings.triton)
    report = run_ci(list(project.specs), with_project, jobs)
    record(targets, options, project, report, started_ns)
    return report


def replay(targets: list[Path], options: CiOptions, jobs: int, reporter: Any, reports: ReportFiles) -> CiReport | None:
    """The recorded report of this command line when nothing it rests on changed (printing the
    lines the full run prints); None otherwise, and for a record that is unreadable, corrupt or
    not this user's. A report file that is one of the files it rests on is refused (exit 2)."""
    started = time.perf_counter()
    try:
        with open(rerun_file(targets, options), "rb") as handle:
            if hasattr(os, "getuid") and os.fstat(handle.fileno()).st_uid != os.getuid():
                return None
            document = cache_json(handle.read(MAX_RERUN_BYTES + 1), MAX_RERUN_BYTES)
        stamps = {path: FileStamp(**stamp) if stamp else None for path, stamp in document["stamps"].items()}
        results = [SpecResult.from_dict(result) for result in document["results"]]
        backends = {request: tuple(choice) for request, choice in document["backends"].items()}
        notes = [str(note) for note in document["notes"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if any(FileStamp.current(path) != stamp for path, stamp in stamps.items()) or not _same_backends(backends):
        return None
    if _has_temporaries(options.out_dir):  # a writer's, live or killed: the full run sweeps a dead one's
        return None
    reports.refuse_inputs(Path(path) for path, stamp in stamps.items() if stamp is not None)
    for note in notes:
        reporter.info(note)
    for result in results:
        reporter.info(f"{result.name}: {result.message}")
    replayed = tuple(dataclasses.replace(result, seconds=0.0) for result in results)
    return CiReport(replayed, time.perf_counter() - started, jobs)


def _has_temporaries(folder: Path) -> bool:
    """Whether ``folder`` holds a commit's temporaries (``.*.tmp``: staged files, backups, an open
    commit's journal). Not stamped instead: every run's write check changes the folder's stamp."""
    try:
        with os.scandir(folder) as entries:
            return any(entry.name.startswith(".") and entry.name.endswith(".tmp") for entry in entries)
    except OSError:
        return False


def _same_backends(backends: dict[str, tuple[Any, ...]]) -> bool:
    """Each backend request still resolves to the flavor and version it did."""
    from trtforge.environment import choose_backend, installed_version

    try:
        flavors = {request: choose_backend(request).flavor for request in backends}
    except TrtforgeError:
        return False
    return all(
        (flavors[request], installed_version(flavors[request]) or "") == choice for request, choice in backends.items()
    )


def record(targets: list[Path], options: CiOptions, project: Any, report: CiReport, started_ns: int) -> None:
    """Record a run (started at ``started_ns``, wall clock) in which every spec was unchanged;
    any other run, or one that saw a file change after it started, records nothing. A record
    that cannot be written only costs the next run its full check."""
    if not report.results or any(result.status is not SpecStatus.UNCHANGED for result in report.results):
        return
    try:
        watched, backends = _watched(targets, options, project, report)
    except (TrtforgeError, OSError):
        return
    stamps = {path: FileStamp.current(path) for path in sorted(watched)}
    if any(stamp is not None and not stamp.settled(started_ns) for stamp in stamps.values()):
        return
    document = {
        "stamps": {path: dataclasses.asdict(stamp) if stamp else None for path, stamp in stamps.items()},
        "results": [dataclasses.asdict(result) for result in report.results],
        "backends": backends,
        "notes": list(project.notes),
    }
    path = rerun_file(targets, options)
    with suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_text(path, json.dumps(document), durable=False)


def _watched(
    targets: list[Path], options: CiOptions, project: Any, report: CiReport
) -> tuple[set[str], dict[str, list[str]]]:
    """Every path the run's verdict rests on, and each backend request's flavor and version."""
    from trtforge.environment import choose_backend, installed_version
    from trtforge.manifest import ENGINE_SUFFIX, artifact_file_names
    from trtforge.project import DEFAULT_ROOTS
    from trtforge.spec import PROJECT_FILE, load_spec

    folders = [target for target in targets if target.is_dir()] or ([] if targets else [project.root])
    watched = {os.path.abspath(root) for root in DEFAULT_ROOTS} if not targets else set()
    watched.update(os.path.abspath(target) for target in targets)
    watched.add(os.path.abspath(project.root / PROJECT_FILE))
    for folder in folders:
        watched.update(folder_tree(Path(folder), follow_links=False))  # as Path.glob's "**" walks
    watched.update(os.path.abspath(path) for path in (*project.specs, *(path for path, _ in project.skipped)))
    backends: dict[str, list[str]] = {}
    for spec_path in project.specs:
        spec = load_spec(Path(spec_path))
        request = options.backend or spec.backend
        flavor = choose_backend(request).flavor
        backends[request] = [flavor, installed_version(flavor) or ""]
        watched.update(build_input_paths(spec))
    for result in report.results:
        engine = Path(result.engine or "")
        stem = engine.name.removesuffix(ENGINE_SUFFIX)
        watched.update(os.path.abspath(engine.with_name(name)) for name in artifact_file_names(stem))
        watched.add(os.path.abspath(options.cache_dir / "builds" / (result.key or "") / RECORD_FILE))
    return watched, backends
