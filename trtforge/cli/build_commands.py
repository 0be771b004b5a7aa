"""``build``, ``inspect``, ``schema``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from trtforge.cli.common import JsonOption, emit_json, exits_cleanly, reporter
from trtforge.errors import TrtforgeError, most_severe

app = typer.Typer()

BACKENDS = ("auto", "tensorrt", "tensorrt-rtx")


@app.command()
@exits_cleanly
def build(
    specs: Annotated[list[Path], typer.Argument(help="Model spec YAML files.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("out"),
    backend: Annotated[
        str | None,
        typer.Option(help="auto | tensorrt | tensorrt-rtx (overrides the spec's backend)."),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Cache directory (default $TRTFORGE_CACHE_DIR or ~/.cache/trtforge)."),
    ] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write the accuracy gate's checks as JUnit XML to this file.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Build each spec: check, prepare precision, build, run the accuracy gate, stamp the manifest."""
    from trtforge.build import build_spec
    from trtforge.errors import InvalidInputError
    from trtforge.spec import load_spec

    if backend is not None and backend not in BACKENDS:
        raise InvalidInputError(f"--backend '{backend}': use {', '.join(BACKENDS)}")
    console = reporter()
    results: list[dict[str, Any]] = []
    suites: list[Any] = []
    for spec_path in specs:
        try:
            outcome = build_spec(load_spec(spec_path), out, console, backend=backend, cache_dir=cache_dir)
        except TrtforgeError as exc:
            suites.append(_junit_failure(spec_path, exc))
            if len(specs) == 1 and not as_json:
                _write_junit(junit, suites)
                raise
            console.error(str(exc))
            results.append(
                {"spec": str(spec_path), "status": "failed", "exit_code": exc.exit_code, "error": str(exc)}
            )
            continue
        suites.append(_junit_success(outcome))
        results.append(
            {
                "spec": str(spec_path),
                "status": "built",
                "exit_code": 0,
                "engine": str(outcome.engine),
                "manifest": str(outcome.manifest_path),
                "backend": outcome.backend.flavor,
                "tag": outcome.manifest.tag,
                "notes": list(outcome.notes),
                "accuracy": outcome.manifest.accuracy,
            }
        )
    _write_junit(junit, suites)
    if as_json:
        emit_json({"results": results})
    code = most_severe(result["exit_code"] for result in results)
    if code:
        raise typer.Exit(code)


def _junit_failure(spec_path: Path, exc: TrtforgeError) -> Any:
    from trtforge.accuracy.gate import GateFailed
    from trtforge.accuracy.report import junit_problem_suite, junit_suite

    if isinstance(exc, GateFailed):
        return junit_suite(exc.report)
    return junit_problem_suite(spec_path.stem, str(exc), exc.exit_code)


def _junit_success(outcome: Any) -> Any:
    from trtforge.accuracy.report import junit_skipped_suite, junit_suite

    if outcome.accuracy is None:
        return junit_skipped_suite(outcome.manifest.stem, "accuracy.enabled is false in the spec")
    return junit_suite(outcome.accuracy)


def _write_junit(path: Path | None, suites: list[Any]) -> None:
    if path is not None:
        from trtforge.accuracy.report import write_junit

        write_junit(path, suites)


@app.command()
@exits_cleanly
def inspect(
    engine: Annotated[Path, typer.Argument(help="An .engine file (its .manifest.json sits beside it).")],
    as_json: JsonOption = False,
) -> None:
    """Show an engine's manifest and file facts."""
    from trtforge.inspection import engine_facts, render_facts

    facts = engine_facts(engine)
    if as_json:
        emit_json(facts)
    else:
        render_facts(facts, reporter())


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec (for editors and CI linting)."""
    from importlib import resources

    sys.stdout.write(resources.files("trtforge").joinpath("spec.schema.json").read_text("utf-8"))
