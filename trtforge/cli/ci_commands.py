"""``ci`` and ``matrix``: pipelines."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from trtforge.cli.common import (
    BackendOption,
    CacheDirOption,
    InsecureOption,
    JsonOption,
    backend_value,
    emit_json,
    exits_cleanly,
    reporter,
)
from trtforge.errors import InvalidInputError

app = typer.Typer()


class MatrixFormat(str, Enum):
    github = "github"
    gitlab = "gitlab"
    json = "json"


@app.command()
@exits_cleanly
def ci(
    targets: Annotated[
        list[Path] | None,
        typer.Argument(metavar="DIR|SPEC", help="Spec folders or spec files (default: the current folder)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("out"),
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Specs built in parallel (one process each).")] = 1,
    backend: BackendOption = None,
    cache_dir: CacheDirOption = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write a JUnit XML report (a test case per spec and step).")
    ] = None,
    remote_cache: Annotated[
        str | None,
        typer.Option(help="oci://HOST/REPO: a build cache shared by runners (pulled on a miss, pushed after a build)."),
    ] = None,
    insecure: InsecureOption = False,
    as_json: JsonOption = False,
) -> None:
    """Build every spec, skipping those whose inputs are unchanged; exit with the most severe outcome."""
    from trtforge.accuracy.report import write_junit
    from trtforge.build import default_cache_dir
    from trtforge.ci import CiOptions, junit_suites, markdown_summary, render_table, run_ci
    from trtforge.fsutil import atomic_write_bytes
    from trtforge.project import discover

    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    summary = _report_file(Path(step_summary), "GITHUB_STEP_SUMMARY") if step_summary else None
    junit = _report_file(junit, "--junit") if junit is not None else None
    project = discover(list(targets or []))
    options = CiOptions(out, cache_dir or default_cache_dir(), backend_value(backend), remote_cache, insecure)
    report = run_ci(list(project.specs), options, jobs)
    render_table(report, reporter())
    if junit is not None:
        with _writing(junit, "--junit"):
            write_junit(junit, junit_suites(report))
    if summary is not None:
        with _writing(summary, "GITHUB_STEP_SUMMARY"):
            previous = summary.read_bytes() if summary.is_file() else b""
            atomic_write_bytes(summary, previous + markdown_summary(report).encode("utf-8"))
    if as_json:
        emit_json(report.to_dict())
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _report_file(path: Path, what: str) -> Path:
    """Checked before any build: a report path that is a folder would otherwise fail the run at its end."""
    if path.is_dir():
        raise InvalidInputError(f"{what} {path} is a folder; point it at a file, e.g. {path / 'report'}")
    return path


@contextmanager
def _writing(path: Path, what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise InvalidInputError(
            f"{what} {path}: cannot write it ({exc.strerror}); point it at a writable file"
        ) from exc


@app.command()
@exits_cleanly
def matrix(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Spec folder with an optional trtforge.yaml.")] = Path(
        "."
    ),
    output_format: Annotated[MatrixFormat, typer.Option("--format", help="github | gitlab | json")] = MatrixFormat.json,
) -> None:
    """Print the build matrix (spec x GPU runner) for the CI system to fan out."""
    from trtforge.cli.common import emit_json
    from trtforge.matrix import plan, render_github, render_gitlab, render_json
    from trtforge.project import discover
    from trtforge.spec import load_spec

    project = discover([folder])
    entries = plan(project, [load_spec(path) for path in project.specs])
    if output_format is MatrixFormat.github:
        typer.echo(render_github(entries))
    elif output_format is MatrixFormat.gitlab:
        typer.echo(render_gitlab(entries, project.settings.publish_to), nl=False)
    else:
        emit_json(render_json(entries))
