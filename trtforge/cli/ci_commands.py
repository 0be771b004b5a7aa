"""``ci`` and ``matrix``: pipelines."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trtforge.cli.common import (
    BackendOption,
    CacheDirOption,
    InsecureOption,
    JsonOption,
    OutOption,
    TrustedKeyOption,
    backend_value,
    emit_json,
    exits_cleanly,
    junit_option,
    reporter,
    said,
    target_from_flags,
    triton_option,
)
from trtforge.errors import InvalidInputError

if TYPE_CHECKING:
    from trtforge.keys import TrustedKey

app = typer.Typer()

#: what ``ci`` and ``matrix`` take without a folder (trtforge.project.default_root)
DEFAULT_FOLDER = "the folder holding trtforge.yaml: ./ or configs/, else ./"


class MatrixFormat(str, Enum):
    github = "github"
    gitlab = "gitlab"
    json = "json"


@app.command()
@exits_cleanly
def ci(
    targets: Annotated[
        list[Path] | None,
        typer.Argument(metavar="DIR|SPEC", help=f"Spec folders or spec files (default: {DEFAULT_FOLDER})."),
    ] = None,
    out: OutOption = Path("out"),
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs", "-j", min=1, help="Specs built in parallel, one process each (default: the CPU cores available)."
        ),
    ] = None,
    backend: BackendOption = None,
    cache_dir: CacheDirOption = None,
    junit: Annotated[Path | None, junit_option("a report (a test case per spec and step)")] = None,
    remote_cache: Annotated[
        str | None,
        typer.Option(help="oci://HOST/REPO: a build cache shared by runners (pulled on a miss, pushed after a build)."),
    ] = None,
    insecure: InsecureOption = False,
    triton: Annotated[
        str | None,
        triton_option(
            "Refuse (exit 5, before building) each spec whose engine this Triton release (e.g. 24.08) "
            "cannot load (default: trtforge.yaml's triton)."
        ),
    ] = None,
    cc: Annotated[
        str | None,
        typer.Option(
            "--cc",
            metavar="X.Y",
            help="Build each spec for this one of its GPU targets (what a GPU job of `trtforge matrix` runs).",
        ),
    ] = None,
    trusted_key: TrustedKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Build every spec, skipping those whose inputs are unchanged; exit with the most severe outcome."""
    from trtforge.cache import default_cache_dir
    from trtforge.ci import CiOptions, ReportFiles, render_ci_table, signing_key_from_env
    from trtforge.environment import usable_cores
    from trtforge.rerun import run_or_replay

    if remote_cache == "":  # an unset shell variable: not "no remote cache", which is leaving the flag out
        raise InvalidInputError(
            "--remote-cache is empty: pass oci://HOST/REPO, or leave the flag out for no remote cache"
        )
    if insecure and remote_cache is None:
        raise InvalidInputError(
            "--insecure (plain HTTP) is for --remote-cache's oci:// registry, and none is given: drop it"
        )
    reports = ReportFiles.checked(junit)
    console = reporter()
    release = _flag_release(triton)
    gpu = str(target_from_flags(cc=cc).compute_capability) if cc is not None else None
    options = CiOptions(  # the key loaded now, before any replay: a bad key fails an unchanged rerun too
        out,
        cache_dir or default_cache_dir(),
        backend_value(backend),
        remote_cache,
        insecure,
        release,
        gpu,
        signing_key=said(signing_key_from_env()),
        trusted_keys=_trusted_keys(trusted_key),
    )
    report = run_or_replay(list(targets or []), options, jobs or usable_cores(), console, reports)
    render_ci_table(report, console)
    reports.write(report)
    if as_json:
        emit_json(report.to_dict())
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _trusted_keys(paths: list[Path] | None) -> tuple[TrustedKey, ...]:
    """``--trusted-key`` (else ``$TRTFORGE_TRUSTED_KEY``): whose attestation added after a build
    ``ci`` keeps. Read before any replay (a key that cannot be read is exit 2 on an unchanged
    rerun too); neither given, nothing is read and no signing code is imported."""
    import os

    from trtforge.keys import TRUSTED_KEY_ENV

    if not paths and not os.environ.get(TRUSTED_KEY_ENV):
        return ()
    from trtforge.signing import load_trusted_keys

    return load_trusted_keys(paths or ())


def _flag_release(name: str | None) -> str | None:
    """``--triton``'s release by its table name (exit 2 for one the table lacks); None without the flag."""
    from trtforge.triton_releases import find_release

    return find_release(name).name if name is not None else None


@app.command()
@exits_cleanly
def matrix(
    folder: Annotated[
        Path | None,
        typer.Argument(metavar="DIR", help=f"Spec folder with an optional trtforge.yaml (default: {DEFAULT_FOLDER})."),
    ] = None,
    output_format: Annotated[MatrixFormat, typer.Option("--format", help="github | gitlab | json")] = MatrixFormat.json,
    triton: Annotated[
        str | None,
        triton_option("Build in this Triton release's container (e.g. 24.08; default: trtforge.yaml's triton)."),
    ] = None,
) -> None:
    """Print the build matrix (spec x GPU runner) for the CI system to fan out."""
    from trtforge.matrix import DEFAULT_CPU_RUNNER, plan_matrix, render_github, render_gitlab, render_json
    from trtforge.project import discover
    from trtforge.spec import load_spec
    from trtforge.triton_releases import find_release

    flag = _flag_release(triton)  # an unknown release: exit 2 before the folder is read
    console = reporter()
    project = discover([folder] if folder is not None else [])
    for note in project.notes:
        console.info(note)
    name = flag or project.settings.triton
    release = find_release(name) if name is not None else None
    specs = [load_spec(path) for path in project.specs]
    entries = plan_matrix(project, specs, DEFAULT_CPU_RUNNER[output_format.value], release)
    if output_format is MatrixFormat.github:
        typer.echo(render_github(entries))
    elif output_format is MatrixFormat.gitlab:
        typer.echo(render_gitlab(entries, project.settings.publish_to, project.settings.install), nl=False)
    else:
        emit_json(render_json(entries))
