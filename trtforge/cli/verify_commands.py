"""``verify``: the accuracy gate on artifacts that already exist."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from trtforge.cli.common import CacheDirOption, JsonOption, cache_dir_value, emit_json, exits_cleanly, reporter
from trtforge.errors import TrtforgeError, most_severe

app = typer.Typer()

SPEC_SUFFIXES = (".yaml", ".yml")

JunitOption = Annotated[
    Path | None, typer.Option("--junit", help="Write the accuracy checks as JUnit XML to this file.")
]


@app.command()
@exits_cleanly
def verify(
    target: Annotated[
        Path,
        typer.Argument(
            metavar="SPEC|ENGINE",
            help="A spec (verifies its engines in --out), or an ENGINE with --spec.",
            show_default=False,
        ),
    ],
    spec: Annotated[
        Path | None, typer.Option("--spec", help="With ENGINE: the spec it was built from (ONNX model and data).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where `verify SPEC` looks for the engines.")] = Path("out"),
    cache_dir: CacheDirOption = None,
    junit: JunitOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the accuracy gate on built engines (or their ONNX simulation where they cannot run here)."""
    from trtforge.accuracy.gate import GateFailed
    from trtforge.accuracy.report import junit_problem_suite, junit_suite, summary, write_junit
    from trtforge.accuracy.verify import spec_artifacts, verify_engine
    from trtforge.errors import InvalidInputError
    from trtforge.spec import load_spec

    if target.suffix in SPEC_SUFFIXES:
        if spec is not None:
            raise InvalidInputError(f"{target} is a spec; pass either SPEC or ENGINE --spec SPEC, not both")
        loaded = load_spec(target)
        engines = spec_artifacts(loaded, out)
    else:
        if spec is None:
            raise InvalidInputError(
                f"{target}: verify ENGINE needs --spec SPEC (the spec gives the ONNX model and the accuracy data)"
            )
        loaded = load_spec(spec)
        engines = [target]
    console = reporter()
    cache = cache_dir_value(cache_dir)
    results: list[dict[str, Any]] = []
    suites = []
    single_error: TrtforgeError | None = None
    for engine in engines:
        try:
            outcome = verify_engine(loaded, engine, console, cache_dir=cache)
        except TrtforgeError as exc:
            report = exc.report if isinstance(exc, GateFailed) else None
            suites.append(junit_suite(report) if report else junit_problem_suite(engine.name, str(exc), exc.exit_code))
            if len(engines) == 1 and not as_json:
                single_error = exc  # raised after the JUnit file is written: one error line, its exit code
            else:
                console.error(str(exc))
            results.append(
                {
                    "engine": str(engine),
                    "status": "failed",
                    "exit_code": exc.exit_code,
                    "error": str(exc),
                    "accuracy": summary(report, f"{report.stem}.accuracy.json") if report else None,
                }
            )
            continue
        suites.append(junit_suite(outcome.report))
        results.append(
            {
                "engine": str(outcome.engine),
                "status": "passed",
                "exit_code": 0,
                "report": str(outcome.report_file),
                "manifest_updated": outcome.manifest_updated,
                "accuracy": summary(outcome.report, outcome.report_file.name),
            }
        )
    if junit is not None:
        write_junit(junit, suites)
    if single_error is not None:
        raise single_error
    if as_json:
        emit_json({"results": results})
    code = most_severe(result["exit_code"] for result in results)
    if code:
        raise typer.Exit(code)
