"""``trtforge ci``: every spec of a project, in parallel, rebuilding only what changed.

A content-addressed build cache is keyed by everything that decides the engine (ONNX, spec,
calibration and accuracy data, backend flavor and version, targets, trtforge version). A spec
whose key is in the cache is not rebuilt: its artifact is restored (or found intact) instead.
The CI system is the distributed scheduler (see ``trtforge matrix``); this runs one machine's share.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trtforge import __version__
from trtforge.errors import AccuracyError, InvalidInputError, RegistryError, TrtforgeError, most_severe
from trtforge.fsutil import ensure_writable_dir, sha256_file

LOCK_DIR = ".trtforge-locks"


@dataclass(frozen=True)
class StepResult:
    """One JUnit test case: a step (build, accuracy) of one spec."""

    name: str
    status: str  # passed | failed | skipped
    seconds: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class SpecResult:
    spec: str
    name: str
    status: str  # built | unchanged | restored | failed
    exit_code: int
    seconds: float
    engine: str | None = None
    key: str | None = None
    message: str = ""
    accuracy: dict[str, Any] | None = None
    steps: tuple[StepResult, ...] = field(default=())


@dataclass(frozen=True)
class CiReport:
    results: tuple[SpecResult, ...]
    seconds: float

    @property
    def exit_code(self) -> int:
        return most_severe(result.exit_code for result in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "results": [asdict(result) for result in self.results],
        }


def build_key(spec: Any, flavor: str, version: str) -> str:
    """Hash of every input that decides the artifact (pure over file contents)."""
    from trtforge.data import data_sha256
    from trtforge.spec import expand_globs

    def globs_hash(patterns: list[str] | None, where: str) -> str | None:
        return data_sha256(expand_globs(patterns, where)) if patterns else None

    origin = spec.origin
    parts = {
        "onnx": sha256_file(spec.model_path),
        "spec": origin.sha256,
        "calibration_data": globs_hash(
            spec.calibration.data if spec.calibration else None, origin.where("calibration", "data")
        ),
        "accuracy_data": globs_hash(spec.accuracy.data, origin.where("accuracy", "data")),
        "labels": sha256_file(Path(spec.accuracy.labels)) if spec.accuracy.labels else None,
        "backend": flavor,
        "backend_version": version,
        "targets": spec.targets,
        "trtforge": __version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _artifact_files(directory: Path, stem: str) -> list[Path]:
    return [
        path
        for path in (
            directory / f"{stem}.engine",
            directory / f"{stem}.manifest.json",
            directory / f"{stem}.accuracy.json",
        )
        if path.is_file()
    ]


def _intact(engine: Path) -> bool:
    from trtforge.compat import file_problem
    from trtforge.manifest import read_manifest

    try:
        return engine.is_file() and file_problem(read_manifest(engine), engine) is None
    except TrtforgeError:
        return False


def _store(cache_entry: Path, out_dir: Path, stem: str, record: dict[str, Any]) -> None:
    """Copy a fresh artifact into the cache; the entry appears whole or not at all."""
    cache_entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_entry.parent))
    try:
        for path in _artifact_files(out_dir, stem):
            shutil.copy2(path, staging / path.name)
        (staging / "record.json").write_text(json.dumps(record, indent=2))
        os.replace(staging, cache_entry)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another run stored the same key first


def _restore(cache_entry: Path, out_dir: Path) -> None:
    from trtforge.fsutil import staged_file

    for path in sorted(cache_entry.iterdir(), key=lambda p: p.name.endswith(".engine")):
        if path.name == "record.json":
            continue
        with staged_file(out_dir / path.name) as staged:
            shutil.copyfile(path, staged)


def _failure_steps(exc: TrtforgeError) -> tuple[StepResult, ...]:
    if exc.exit_code == AccuracyError.exit_code:
        return (StepResult("build", "passed"), StepResult("accuracy", "failed", message=str(exc)))
    return (
        StepResult("build", "failed", message=str(exc)),
        StepResult("accuracy", "skipped", message="not run: the build failed"),
    )


@dataclass(frozen=True)
class CiOptions:
    """Everything a worker needs besides the spec (plain values: it crosses process boundaries)."""

    out_dir: Path
    cache_dir: Path
    backend: str | None = None
    remote_cache: str | None = None  # oci://HOST/REPO shared by CI runners
    insecure: bool = False


def cache_tag(key: str) -> str:
    """The OCI tag of a build-cache entry (70 characters: a valid tag)."""
    return f"build-{key}"


def _remote(options: CiOptions) -> Any:
    from trtforge.publish import OciLocation, open_registry, parse_location

    location = parse_location(options.remote_cache or "")
    if not isinstance(location, OciLocation):
        raise InvalidInputError(f"--remote-cache '{options.remote_cache}': use oci://HOST[:PORT]/REPO")
    return open_registry(location, insecure=options.insecure)


def _pull_remote(options: CiOptions, key: str, entry: Path, reporter: Any) -> dict[str, Any] | None:
    """Fill the local cache entry from the remote cache; None when the remote has no such build.
    A remote that fails only costs the build it would have saved: warn and go on."""
    from trtforge.manifest import read_manifest

    entry.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".remote-", dir=entry.parent) as scratch:
            engine = _remote(options).pull_tag(cache_tag(key), Path(scratch))
            if engine is None:
                return None
            if not _intact(engine):
                reporter.warn(f"remote cache entry {cache_tag(key)} is damaged (sha256 differs): rebuilding")
                return None
            manifest = read_manifest(engine)
            record = {"engine": engine.name, "accuracy": manifest.accuracy}
            _store(entry, Path(scratch), manifest.stem, record)
    except RegistryError as exc:
        reporter.warn(f"remote cache unavailable ({exc}): building locally")
        return None
    return record


def _push_remote(options: CiOptions, key: str, engine: Path, reporter: Any) -> None:
    from trtforge.publish import load_local_artifact

    try:
        _remote(options).push(load_local_artifact(engine), cache_tag(key), force=True)
    except RegistryError as exc:
        reporter.warn(f"could not store the build in the remote cache ({exc}); the artifact itself is fine")


def _unchanged(
    spec_path: str, spec: Any, key: str, entry: Path, out: Path, started: float, reporter: Any, remote: bool
) -> SpecResult:
    record = json.loads((entry / "record.json").read_text())
    engine = out / record["engine"]
    status, message = "unchanged", "inputs unchanged: skipped"
    if not _intact(engine):
        _restore(entry, out)
        where = "the remote build cache" if remote else "the build cache"
        status, message = "restored", f"inputs unchanged: restored from {where}"
    reporter.info(f"{spec.name}: {message}")
    skipped = (StepResult("build", "skipped", message=message), StepResult("accuracy", "skipped", message=message))
    return SpecResult(
        spec_path,
        spec.name,
        status,
        0,
        time.perf_counter() - started,
        str(engine),
        key,
        message,
        record.get("accuracy"),
        skipped,
    )


def run_one(spec_path: str, options: CiOptions, allow_build: bool = True) -> SpecResult | None:
    """Build (or skip) one spec; returns plain values, since it runs in a worker process.

    With ``allow_build=False`` it only answers from the local cache (None: a build is needed),
    which lets the parent settle unchanged specs without starting a worker.
    """
    from filelock import FileLock

    from trtforge.backends import choose_backend
    from trtforge.compat import installed_version
    from trtforge.console import Reporter
    from trtforge.spec import load_spec

    started = time.perf_counter()
    reporter = Reporter(interactive=False)
    out = options.out_dir
    name = Path(spec_path).stem
    try:
        spec = load_spec(Path(spec_path))
        name = spec.name
        choice = choose_backend(options.backend or spec.backend)
        key = build_key(spec, choice.flavor, installed_version(choice.flavor) or "")
        entry = options.cache_dir / "builds" / key
        (out / LOCK_DIR).mkdir(parents=True, exist_ok=True)
        # Two pipelines on one output folder take turns per artifact; the second one then
        # finds the first one's result in the cache.
        with FileLock(str(out / LOCK_DIR / f"{spec.name}-{spec.precision}.lock")):
            if (entry / "record.json").is_file():
                return _unchanged(spec_path, spec, key, entry, out, started, reporter, remote=False)
            if not allow_build:
                return None
            if options.remote_cache and _pull_remote(options, key, entry, reporter) is not None:
                return _unchanged(spec_path, spec, key, entry, out, started, reporter, remote=True)
            from trtforge.build import build_spec

            outcome = build_spec(spec, out, reporter, backend=options.backend, cache_dir=options.cache_dir)
            accuracy = outcome.manifest.accuracy
            _store(entry, out, outcome.manifest.stem, {"engine": outcome.engine.name, "accuracy": accuracy})
            if options.remote_cache:
                _push_remote(options, key, outcome.engine, reporter)
    except TrtforgeError as exc:
        reporter.error(f"{name}: {exc}")
        return SpecResult(
            spec_path,
            name,
            "failed",
            exc.exit_code,
            time.perf_counter() - started,
            message=str(exc),
            steps=_failure_steps(exc),
        )
    seconds = time.perf_counter() - started
    gate = (
        StepResult("accuracy", "passed")
        if outcome.accuracy is not None
        else StepResult("accuracy", "skipped", message="accuracy.enabled is false")
    )
    return SpecResult(
        spec_path,
        spec.name,
        "built",
        0,
        seconds,
        str(outcome.engine),
        key,
        "built",
        accuracy,
        (StepResult("build", "passed", seconds), gate),
    )


def run_ci(specs: list[Path], options: CiOptions, jobs: int) -> CiReport:
    """Every spec, ``jobs`` at a time (one process each: TensorRT builds hold the GIL)."""
    started = time.perf_counter()
    ensure_writable_dir(options.out_dir)
    if options.remote_cache:
        _remote(options)  # a malformed URI is a usage error before any work
    paths = [str(spec) for spec in specs]
    settled = [run_one(path, options, allow_build=jobs <= 1) for path in paths]
    to_build = [path for path, result in zip(paths, settled, strict=True) if result is None]
    if to_build:
        with ProcessPoolExecutor(max_workers=min(jobs, len(to_build))) as pool:
            built = iter(pool.map(run_one, to_build, [options] * len(to_build)))
        settled = [result if result is not None else next(built) for result in settled]
    return CiReport(tuple(result for result in settled if result is not None), time.perf_counter() - started)


# ---------------------------------------------------------------- reports


def junit_suites(report: CiReport) -> list[Any]:
    """A test case per spec and step, so CI systems show builds and gates like tests."""
    from junitparser import Error, Failure, Skipped, TestCase, TestSuite

    suite = TestSuite("trtforge.ci")
    for result in report.results:
        for step in result.steps:
            case = TestCase(step.name, classname=result.name, time=round(step.seconds, 3))
            if step.status == "failed":
                kind = Failure if step.name == "accuracy" else Error
                case.result = [kind(step.message, f"exit {result.exit_code}")]
            elif step.status == "skipped":
                case.result = [Skipped(step.message)]
            suite.add_testcase(case)
    suite.time = round(report.seconds, 3)
    return [suite]


def _accuracy_text(accuracy: dict[str, Any] | None) -> str:
    if not accuracy:
        return "-"
    if accuracy.get("skipped"):
        return "skipped"
    return f"{'passed' if accuracy.get('passed') else 'failed'} ({accuracy.get('candidate', '?')})"


def markdown_summary(report: CiReport) -> str:
    """For ``$GITHUB_STEP_SUMMARY``."""
    lines = [
        f"### trtforge ci: exit {report.exit_code} in {report.seconds:.1f} s",
        "",
        "| spec | status | accuracy | engine | seconds |",
        "|---|---|---|---|---|",
    ]
    for result in report.results:
        engine = Path(result.engine).name if result.engine else result.message.replace("|", "\\|")
        lines.append(
            f"| {result.name} | {result.status} | {_accuracy_text(result.accuracy)} | {engine} | {result.seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"


def render_table(report: CiReport, reporter: Any) -> None:
    from rich.table import Table

    table = Table(title=f"trtforge ci — exit {report.exit_code} in {report.seconds:.1f} s", title_justify="left")
    for column in ("spec", "status", "exit", "accuracy", "engine / error", "s"):
        table.add_column(column)
    styles = {"built": "green", "unchanged": "dim", "restored": "cyan", "failed": "red"}
    for result in report.results:
        engine = Path(result.engine).name if result.engine else result.message
        table.add_row(
            Path(result.spec).name,
            f"[{styles[result.status]}]{result.status}[/]",
            str(result.exit_code),
            _accuracy_text(result.accuracy),
            engine,
            f"{result.seconds:.1f}",
        )
    reporter.render(table)
